// Rebuild venues/sim/contracts/build/*.json (ABI + creation bytecode) with the pinned npm solc.
// Usage: npm run compile   (or: node venues/sim/contracts/compile.mjs)
// Each JSON also records the compiler version and the SHA-256 of its source file so a test can
// tell when a committed build no longer matches its source.
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import solc from "solc";

const here = dirname(fileURLToPath(import.meta.url));
const buildDir = join(here, "build");
const sources = {};
for (const file of readdirSync(here).filter((f) => f.endsWith(".sol")).sort()) {
  sources[file] = { content: readFileSync(join(here, file), "utf8") };
}

const input = {
  language: "Solidity",
  sources,
  settings: {
    evmVersion: "cancun",
    optimizer: { enabled: true, runs: 200 },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
  },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors || []).filter((e) => e.severity === "error");
for (const e of output.errors || []) console.error(e.formattedMessage);
if (errors.length > 0) process.exit(1);

mkdirSync(buildDir, { recursive: true });
for (const [file, contracts] of Object.entries(output.contracts)) {
  const sourceSha256 = createHash("sha256").update(sources[file].content).digest("hex");
  for (const [name, artifact] of Object.entries(contracts)) {
    if (artifact.evm.bytecode.object === "") continue; // interfaces
    const out = {
      contractName: name,
      sourceFile: file,
      sourceSha256,
      compiler: solc.version(),
      evmVersion: input.settings.evmVersion,
      abi: artifact.abi,
      bytecode: "0x" + artifact.evm.bytecode.object,
    };
    writeFileSync(join(buildDir, `${name}.json`), JSON.stringify(out, null, 1) + "\n");
    console.log(`built ${name} from ${file}`);
  }
}
