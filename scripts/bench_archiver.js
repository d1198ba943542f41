// A baseline of scripts/bench: Node's archiver (what the AWS sample's Lambda uses) re-zipping
// the gzip parts in DIR into one CSV entry at DEFLATE level 6.
// Usage: NODE_PATH=… node scripts/bench_archiver.js DIR OUT.zip
const fs = require("fs");
const path = require("path");
const zlib = require("zlib");
const { PassThrough } = require("stream");
const archiver = require("archiver");

const [dir, out] = process.argv.slice(2);
const files = fs.readdirSync(dir).filter((f) => f.endsWith(".gz")).sort();
const output = fs.createWriteStream(out);
const zip = archiver("zip", { zlib: { level: 6 }, forceZip64: true });
zip.pipe(output);
const entry = new PassThrough();
zip.append(entry, { name: "export.csv" });

(async () => {
  for (const f of files) {
    await new Promise((resolve, reject) => {
      const part = fs.createReadStream(path.join(dir, f)).pipe(zlib.createGunzip());
      part.on("end", resolve);
      part.on("error", reject);
      part.pipe(entry, { end: false });
    });
  }
  entry.end();
  await zip.finalize();
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
