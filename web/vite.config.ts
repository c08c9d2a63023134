import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// Built into dist/ and served by mindbot-agent at / (http.web_root), beside
// /v1 on the same origin. `npm run dev` proxies /v1 to a local worker.
export default defineConfig({
  plugins: [react()],
  // livekit-client is most of the bundle (~770 kB, 210 kB gzipped).
  build: { outDir: "dist", assetsDir: "assets", sourcemap: false, chunkSizeWarningLimit: 1000 },
  server: { proxy: { "/v1": "http://127.0.0.1:9464" } },
});
