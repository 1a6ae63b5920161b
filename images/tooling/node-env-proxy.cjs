// pygent: Node's fetch through an allowlisted sandbox's egress proxy (issue 25).
//
// Why: Node 24 honours NODE_USE_ENV_PROXY=1 (which pygent sets) by itself; older Nodes,
// Debian's 18 (bookworm) and 20 (trixie) among them, have no such switch and their
// fetch ignores HTTP(S)_PROXY: it resolves names itself, and a sandbox has no resolver.
// Their fetch is undici's, and undici's EnvHttpProxyAgent reads HTTP(S)_PROXY and
// NO_PROXY. So an allowlisted sandbox loads this file (NODE_OPTIONS=--require ...):
// at the first fetch, when an `undici` module is on Node's path (Debian's nodejs
// depends on node-undici), its EnvHttpProxyAgent becomes the global dispatcher, which
// Node's own fetch uses. Nothing is loaded before a first fetch (undici costs ~90 ms
// of CPU), and nothing happens without an undici module or on Node 24 and later.
"use strict";
(function () {
  const major = Number(process.versions.node.split(".")[0]);
  const native = globalThis.fetch;
  if (major >= 24 || typeof native !== "function") return;
  globalThis.fetch = function fetch(...args) {
    globalThis.fetch = native;
    const warn = process.emitWarning;
    // undici 7 calls its EnvHttpProxyAgent experimental: the command did not ask for it, so it does not hear of it.
    process.emitWarning = function (warning, ...rest) {
      const options = rest[0];
      if (options && (options === "UNDICI-EHPA" || options.code === "UNDICI-EHPA")) return;
      return warn.call(this, warning, ...rest);
    };
    try {
      const undici = require("undici");
      if (typeof undici.EnvHttpProxyAgent === "function") undici.setGlobalDispatcher(new undici.EnvHttpProxyAgent());
    } catch (e) {
      // no undici module here: nothing to do (Node 24 needs none)
    } finally {
      process.emitWarning = warn;
    }
    return native.apply(this, args);
  };
})();
