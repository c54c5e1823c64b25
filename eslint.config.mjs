import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const drivers = ['knex', 'mysql2', 'mysql2/*', 'better-sqlite3', 'mongodb', 'amqplib', 'nodemailer'];

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', '.data/**', 'tools/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { arguments: false } }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', ignoreRestSiblings: true }],
    },
  },
  {
    files: ['**/*.mjs'],
    languageOptions: { globals: { process: 'readonly', console: 'readonly', URL: 'readonly' } },
  },
  {
    files: ['**/*.cjs'],
    languageOptions: { sourceType: 'commonjs', globals: { require: 'readonly' } },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
  {
    files: ['web/**/*.js'],
    languageOptions: { globals: { window: 'readonly' } },
  },
  {
    // Function files are handlers: every driver is reached through lib/.
    files: ['functions/**'],
    rules: {
      'no-restricted-imports': ['error', {
        paths: drivers.filter((d) => !d.includes('*')).map((name) => ({ name, message: 'Drivers belong in lib/.' })),
        patterns: [{ group: drivers, message: 'Drivers belong in lib/.' }],
      }],
    },
  },
);
