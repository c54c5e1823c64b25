// The tree shows the architecture: lib/ by concern, each folder's main module saying what it owns,
// and no import cycle — type-only imports included, which ESLint's import-x/no-cycle does not follow.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const lib = path.join(__dirname, '../lib');
const files = fs.readdirSync(lib, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts')).map((f) => path.join(lib, f));

function importsOf(file: string): string[] {
  const source = fs.readFileSync(file, 'utf8');
  const specs = [...source.matchAll(/^(?:import|export)\b[^'"]*?from\s+['"](\.[^'"]+)['"]/gm)].map((m) => m[1]!);
  return specs.map((s) => path.resolve(path.dirname(file), s.endsWith('.ts') ? s : `${s}.ts`)).filter((f) => fs.existsSync(f));
}

function findCycle(): string[] | undefined {
  const state = new Map<string, 'visiting' | 'done'>();
  const stack: string[] = [];
  const visit = (file: string): string[] | undefined => {
    if (state.get(file) === 'done') return undefined;
    if (state.get(file) === 'visiting') return [...stack.slice(stack.indexOf(file)), file];
    state.set(file, 'visiting');
    stack.push(file);
    for (const next of importsOf(file)) {
      const cycle = visit(next);
      if (cycle) return cycle;
    }
    stack.pop();
    state.set(file, 'done');
    return undefined;
  };
  for (const file of files) {
    const cycle = visit(file);
    if (cycle) return cycle.map((f) => path.relative(lib, f));
  }
  return undefined;
}

describe('the layout of lib/', () => {
  it('when every import (type-only too) is followed, then there is no cycle', () => {
    expect(files.length).toBeGreaterThan(20);
    expect(findCycle()).toBeUndefined();
  });

  it('when lib/ is listed, then it holds only concern folders, each with a main module saying what it owns', () => {
    const entries = fs.readdirSync(lib, { withFileTypes: true });
    expect(entries.filter((e) => !e.isDirectory()).map((e) => e.name)).toEqual([]);
    const owners = entries.map((e) => {
      const folder = path.join(lib, e.name);
      const says = fs.readdirSync(folder).filter((f) => new RegExp(`lib/${e.name} owns`).test(fs.readFileSync(path.join(folder, f), 'utf8')));
      return [e.name, says.length];
    });
    expect(Object.fromEntries(owners)).toEqual(Object.fromEntries(entries.map((e) => [e.name, 1])));
  });
});
