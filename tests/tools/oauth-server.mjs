// A real OAuth 2.0 authorization server for the tests (oauth2-mock-server).
// Usage: node oauth-server.mjs PORT — prints "ready <issuer-url>" when it listens.
import { OAuth2Server } from "oauth2-mock-server";

const port = Number(process.argv[2] || 0);
const server = new OAuth2Server();
await server.issuer.keys.generate("RS256");
await server.start(port, "127.0.0.1");
console.log(`ready ${server.issuer.url}`);
process.on("SIGTERM", async () => {
  await server.stop();
  process.exit(0);
});
