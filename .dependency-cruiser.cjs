/** Layer rules of DESIGN.md, checked on every lint. */
module.exports = {
  forbidden: [
    {
      name: 'domain-is-pure',
      comment: 'src/domain imports nothing outside itself: no adapters, no Node built-ins, no packages.',
      severity: 'error',
      from: { path: '^src/domain' },
      to: { pathNot: '^src/domain' },
    },
    {
      name: 'adapters-only-in-composition-root',
      comment: 'Concrete adapters are wired only by the composition root (src/app.ts) and CLIs.',
      severity: 'error',
      from: { path: '^src/(domain|commands|projections|plugins|http)/' },
      to: { path: '^src/adapters/' },
    },
    {
      name: 'no-circular',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsConfig: { fileName: 'tsconfig.json' },
    tsPreCompilationDeps: true,
    exclude: { path: '\\.test\\.ts$' },
  },
};
