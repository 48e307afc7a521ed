// Uploads a file to filesvc's tus endpoint with tus-js-client, as a browser app would.
// Usage: node tus_upload.mjs <mode> <endpoint> <token> <file>
//   mode "resume":   small chunks; aborted past a third, then resumed from the stored upload URL
//   mode "parallel": parallelUploads: 3 (partial uploads joined by a final concatenation)
// Prints one JSON line: {"url": ..., "abortedAt": ..., "resumedFrom": ...}.
import fs from "node:fs";
import path from "node:path";
import { Upload } from "tus-js-client";

const [mode, endpoint, token, file] = process.argv.slice(2);
const data = fs.readFileSync(file);
const common = {
  endpoint,
  headers: { Authorization: `Bearer ${token}` },
  metadata: { filename: path.basename(file), filetype: "image/png" },
  retryDelays: [],
};

function run(options) {
  return new Promise((resolve, reject) => {
    const upload = new Upload(data, {
      ...common,
      ...options,
      onError: reject,
      onSuccess: () => resolve(upload),
    });
    if (options.onStart) options.onStart(upload);
    upload.start();
  });
}

async function resume() {
  const chunkSize = 256 * 1024;
  let stored = null;
  let abortedAt = -1;
  await new Promise((resolve, reject) => {
    const upload = new Upload(data, {
      ...common,
      chunkSize,
      onError: reject,
      onSuccess: () => reject(new Error("finished before it could be aborted")),
      onChunkComplete: (_size, accepted) => {
        stored = upload.url; // what an app keeps to resume later
        if (accepted >= data.length / 3 && abortedAt < 0) {
          abortedAt = accepted;
          upload.abort(false).then(resolve, reject);
        }
      },
    });
    upload.start();
  });
  let resumedFrom = -1;
  const done = await run({
    chunkSize,
    uploadUrl: stored,
    onProgress: (sent) => {
      if (resumedFrom < 0) resumedFrom = sent;
    },
  });
  return { url: done.url, abortedAt, resumedFrom };
}

async function parallel() {
  const done = await run({ parallelUploads: 3 });
  return { url: done.url, abortedAt: null, resumedFrom: null };
}

const result = mode === "parallel" ? await parallel() : await resume();
process.stdout.write(JSON.stringify(result) + "\n");
