// Runs `next build` unless .next holds a build newer than every source file.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const web = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const inputs = ['src', 'public', 'next.config.ts', 'package.json', 'package-lock.json', 'tsconfig.json'];

function newest(entry) {
  const full = path.join(web, entry);
  if (!fs.existsSync(full)) return 0;
  const stat = fs.statSync(full);
  if (!stat.isDirectory()) return stat.mtimeMs;
  return Math.max(
    stat.mtimeMs,
    ...fs.readdirSync(full).map((name) => newest(path.join(entry, name))),
  );
}

const buildId = path.join(web, '.next', 'BUILD_ID');
const built = fs.existsSync(buildId) ? fs.statSync(buildId).mtimeMs : 0;
if (built > Math.max(...inputs.map(newest))) {
  console.log('e2e: the .next build is current');
} else {
  console.log('e2e: running next build');
  execFileSync(process.execPath, [path.join(web, 'node_modules', 'next', 'dist', 'bin', 'next'), 'build'], {
    cwd: web,
    stdio: 'inherit',
    env: { ...process.env, NEXT_TELEMETRY_DISABLED: '1' },
    timeout: 300_000,
  });
}
