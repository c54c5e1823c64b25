#!/usr/bin/env node
// `npx video2mp3` in the checkout: runs the TypeScript CLI through tsx, which the project already uses.
require('tsx/cjs');
require('./main.ts');
