// Module resolution hooks so Node can load the browser packages the way a
// bundler (esbuild, webpack, importmap-rails) does:
// - `@hotwired/turbo` → its "module" entry (dist/turbo.es2017-esm.js);
// - `@rails/actioncable/src` (imported lazily by @hotwired/turbo-rails'
//   cable.js) → src/index.js;
// - extensionless relative imports inside @hotwired/turbo-rails and
//   @rails/actioncable/src (`import "./cable"`) → `.js`;
// - those files are ES modules although their package.json has no
//   "type": "module".
// Registered with `module.register()` by tests that need it.

const ESM_DIRS = [
  '/node_modules/@hotwired/turbo-rails/app/javascript/',
  '/node_modules/@rails/actioncable/src/',
  '/node_modules/@hotwired/turbo/dist/turbo.es2017-esm.js',
];

const isBrowserEsm = (url) => ESM_DIRS.some((d) => url.includes(d));

export async function resolve(specifier, context, next) {
  if (specifier === '@hotwired/turbo') {
    return next('@hotwired/turbo/dist/turbo.es2017-esm.js', context);
  }
  if (specifier === '@rails/actioncable/src') {
    return next('@rails/actioncable/src/index.js', context);
  }
  if (
    context.parentURL &&
    isBrowserEsm(context.parentURL) &&
    (specifier.startsWith('./') || specifier.startsWith('../')) &&
    !/\.[cm]?js$/.test(specifier)
  ) {
    return next(`${specifier}.js`, context);
  }
  return next(specifier, context);
}

export async function load(url, context, next) {
  if (isBrowserEsm(url)) {
    return next(url, { ...context, format: 'module' });
  }
  return next(url, context);
}
