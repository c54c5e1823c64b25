import js from '@eslint/js';
import { createNodeResolver, importX } from 'eslint-plugin-import-x';
import tseslint from 'typescript-eslint';

const drivers = ['knex', 'mysql2', 'mysql2/*', 'better-sqlite3', 'mongodb', 'amqplib', 'nodemailer'];
const noDrivers = (where) => ({
  'no-restricted-imports': ['error', {
    paths: drivers.filter((d) => !d.includes('*')).map((name) => ({ name, message: `Drivers belong in ${where}.` })),
    patterns: [{ group: drivers, message: `Drivers belong in ${where}.` }],
  }],
});

// The layers of lib/, lowest first: each folder may import only the folders listed for it (and
// itself). http/ is the top of lib/; nothing in lib/ imports functions/.
const layers = {
  core: [],
  media: ['core'],
  storage: ['core'],
  messaging: ['core', 'media'],
  auth: ['core', 'storage'],
  pipeline: ['core', 'storage', 'messaging', 'media'],
  mail: ['core', 'storage', 'messaging', 'auth', 'pipeline'],
  http: ['core', 'storage', 'messaging', 'media', 'auth', 'pipeline', 'mail'],
};
const zones = [
  ...Object.entries(layers).map(([folder, allowed]) => ({
    target: `./lib/${folder}`,
    from: './lib',
    except: [folder, ...allowed].map((f) => `./${f}`),
    message: `lib/${folder} may import only lib/{${[folder, ...allowed].join(',')}}.`,
  })),
  { target: './lib', from: './functions', message: 'lib/ never imports a function.' },
];

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', '.data/**', 'tools/**', 'vendor/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    plugins: { 'import-x': importX },
    settings: {
      'import-x/resolver-next': [createNodeResolver({ extensions: ['.ts', '.js', '.mjs', '.json'] })],
      'import-x/parsers': { '@typescript-eslint/parser': ['.ts'] },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { arguments: false } }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', ignoreRestSiblings: true }],
      // Type-only imports count too: a cycle of types still ties two modules together.
      'import-x/no-cycle': ['error', { ignoreExternal: true }],
      'import-x/no-restricted-paths': ['error', { zones }],
    },
  },
  {
    files: ['**/*.mjs'],
    languageOptions: { globals: { process: 'readonly', console: 'readonly', URL: 'readonly' } },
  },
  {
    files: ['**/*.cjs'],
    languageOptions: { sourceType: 'commonjs', globals: { require: 'readonly', module: 'readonly', process: 'readonly', __dirname: 'readonly' } },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
  {
    files: ['web/**/*.js'],
    languageOptions: { globals: { window: 'readonly' } },
  },
  {
    // Drivers are reached only through lib/storage, lib/messaging and lib/mail.
    files: ['functions/**', 'lib/core/**', 'lib/http/**', 'lib/auth/**', 'lib/media/**', 'lib/pipeline/**'],
    rules: noDrivers('lib/storage, lib/messaging or lib/mail'),
  },
);
