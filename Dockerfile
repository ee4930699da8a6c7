# Production image of the TianQi server (used by docker-compose.yml).
FROM node:20-bookworm-slim AS deps
WORKDIR /app
# better-sqlite3 compiles when no prebuilt binary can be fetched.
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
RUN npm ci --omit=dev

FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production TIANQI_DATA_DIR=/var/lib/tianqi
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
COPY src ./src
COPY ui ./ui
COPY scripts ./scripts
COPY helper ./helper
# tianqi-helper: the build shipped in helper/prebuilt/ (checked against its manifest), no Go needed.
RUN node --import tsx scripts/build-helper.ts --strict
# The console is built into ui/dist at image build time, not on the first start.
RUN node --import tsx scripts/build-ui.ts
RUN mkdir -p /var/lib/tianqi && chown node:node /var/lib/tianqi
USER node
EXPOSE 8080 2026 28000-28199
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s CMD node -e "fetch('http://127.0.0.1:8080/api/health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
CMD ["node", "--import", "tsx", "src/main.ts"]
