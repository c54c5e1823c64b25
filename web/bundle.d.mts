/** Bundles the web page into `outdir`; resolves to the path of the bundled script. */
export function bundleWeb(outdir: string): Promise<string>;
