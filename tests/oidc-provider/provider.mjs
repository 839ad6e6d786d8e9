// A real OpenID Provider (panva's oidc-provider) on loopback, for oidcvault's
// discovery and connection-test tests. Started and stopped by the Rust harness
// (tests/discovery.rs); never reaches beyond 127.0.0.1.
//
// Environment:
//   OP_PORT           port to listen on (0 = any free port; default 0)
//   OP_CLIENT_ID      the registered client's id
//   OP_CLIENT_SECRET  its secret
//   OP_TOKEN_PATH     the token endpoint's path (default /token), so a restart
//                     with another path changes the discovery document
//   OP_AUTH_METHOD    the client's token_endpoint_auth_method, and the only
//                     one the provider offers (default client_secret_basic)
//
// Prints one line `listening <port>` on stdout once it serves; the issuer is
// http://127.0.0.1:<port>. Logs go to stderr.
import http from 'node:http';
import Provider from 'oidc-provider';

const env = (name, fallback) => process.env[name] ?? fallback;
const clientId = env('OP_CLIENT_ID', 'oidcvault-test');
const clientSecret = env('OP_CLIENT_SECRET', 'provider-test-secret-0123456789');
const tokenPath = env('OP_TOKEN_PATH', '/token');
const authMethod = env('OP_AUTH_METHOD', 'client_secret_basic');

const server = http.createServer();
server.listen(Number(env('OP_PORT', '0')), '127.0.0.1', () => {
  const { port } = server.address();
  const provider = new Provider(`http://127.0.0.1:${port}`, {
    clients: [{
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: ['https://rp.example.test/callback'],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: authMethod,
    }],
    clientAuthMethods: [authMethod],
    routes: { token: tokenPath },
    cookies: { keys: ['oidcvault-test-cookie-key-not-secret'] },
  });
  server.on('request', provider.callback());
  process.stdout.write(`listening ${port}\n`);
});

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
// The harness closes our stdin when it goes away: never outlive it.
process.stdin.on('end', stop);
process.stdin.resume();
