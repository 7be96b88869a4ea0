import type { NextConfig } from 'next';

const nextConfig: NextConfig = {
  // The Docker image runs .next/standalone/server.js.
  output: 'standalone',
  reactStrictMode: true,
};

export default nextConfig;
