// The wallet's replayed payment (tests/mp/wallet_heap_scenario.py, class Replay) in the MicroPython
// WebAssembly port (npm @micropython/micropython-webassembly-pyscript, pinned in package.json): 32-bit
// pointers, 16-byte GC blocks, no sockets or ptys.
//   node run_micropython.mjs HEAP_BYTES SET_DIR ROOT SCRIPT
// SET_DIR (the .mpy set and wallet_heap_scenario.mpy, recursively) is copied into the port's in-memory
// filesystem at /lib, the only sys.path entry; ROOT and SCRIPT are paths in that filesystem.
// One runPython() per App.step(): this port collects garbage only when control is back in JavaScript
// (it cannot scan the wasm stack), and grows its heap (MICROPY_GC_SPLIT_HEAP_AUTO) when an allocation
// does not fit before that. Prints the scenario's JSON line, then {"gc_total": heap size at the end}.
import fs from "node:fs";
import path from "node:path";
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";

const [heap, setDir, root, script] = process.argv.slice(2);
let out = "";
const text = (s) => (typeof s === "string" ? s : Buffer.from(s).toString("latin1"));
const mp = await loadMicroPython({
  heapsize: Number(heap), stdout: (s) => { out += text(s); }, stderr: (s) => { out += text(s); }, linebuffer: false,
});

function copyIn(src, dst) {
  for (const name of fs.readdirSync(src)) {
    const s = path.join(src, name), d = dst + "/" + name;
    if (fs.statSync(s).isDirectory()) {
      mp.FS.mkdir(d);
      copyIn(s, d);
    } else {
      mp.FS.writeFile(d, fs.readFileSync(s));
    }
  }
}
mp.FS.mkdir("/lib");
copyIn(setDir, "/lib");

const guarded = (code) => "try:\n" + code.split("\n").map((l) => "    " + l).join("\n") +
  "\nexcept Exception as _e:\n    _failed = True\n    print(_s.error_line(_e))\n";
mp.runPython("import sys\nsys.path[:] = ['/lib']\nimport gc\n_failed = False\nimport wallet_heap_scenario as _s\n");
mp.runPython(guarded("_r = _s.Replay(" + JSON.stringify(root) + ", " + JSON.stringify(script) + ")\n_more = True"));
while (!mp.globals.get("_failed") && mp.globals.get("_more")) {
  mp.runPython(guarded("_more = _r.step()"));
}
if (!mp.globals.get("_failed")) mp.runPython(guarded("print(_r.finish())"));
mp.runPython("print('{\"gc_total\": %d}' % (gc.mem_alloc() + gc.mem_free()))");
process.stdout.write(out);
process.exit(mp.globals.get("_failed") ? 1 : 0);
