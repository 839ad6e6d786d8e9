// A real OpenID Provider (panva's oidc-provider) on loopback, for oidcvault's
// discovery and connection-test tests (tests/discovery/provider.rs) and the
// sign-in broker's end-to-end test in a browser (tests/browser.rs). Started
// and stopped by the Rust harness; never reaches beyond 127.0.0.1.
//
// Environment:
//   OP_PORT           port to listen on (0 = any free port; default 0)
//   OP_CLIENT_ID      the registered client's id
//   OP_CLIENT_SECRET  its secret
//   OP_TOKEN_PATH     the token endpoint's path (default /token), so a restart
//                     with another path changes the discovery document
//   OP_AUTH_METHOD    the client's token_endpoint_auth_method, and the only
//                     one the provider offers (default client_secret_basic)
//   OP_REDIRECT_URIS  the client's redirect URIs, separated by spaces or commas
//                     (default https://rp.example.test/callback); for the
//                     broker: <server.public_url>/sso/callback
// Sign-in (only when OP_ACCOUNT_EMAIL is set; otherwise there is no usable
// account, as before):
//   OP_ACCOUNT_EMAIL           the one account's e-mail (e.g. alice@acme.com)
//   OP_ACCOUNT_LOGIN           what is typed into the login form's first field
//                              (default: the e-mail); any other login is not
//                              an account, and the form comes back
//   OP_ACCOUNT_PASSWORD        its password (default: any password)
//   OP_ACCOUNT_SUB             its subject (default: the login)
//   OP_ACCOUNT_EMAIL_VERIFIED  "true" (default) or "false"
//   OP_ACCOUNT_NAME            "Given Family" (default "Alice Example")
//   OP_CLAIMS_IN_ID_TOKEN      "true": scope claims (email, profile) in the ID
//                              token too; default: the provider's default
//                              (conformIdTokenClaims: in the code flow they are
//                              only at userinfo, so a relying party must call it)
// The login form is the provider's own (devInteractions); a login or password
// that is not the account's brings the form back (303 to it) instead of
// signing anyone in. Consent for openid email profile is given without a
// second page.
//
// Prints one line `listening <port>` on stdout once it serves; the issuer is
// http://127.0.0.1:<port>. Logs go to stderr: one line per request
// (`op: METHOD path -> status`, without the query) when OP_ACCOUNT_EMAIL is set.
import http from 'node:http';
import Provider from 'oidc-provider';

const env = (name, fallback) => process.env[name] ?? fallback;
const clientId = env('OP_CLIENT_ID', 'oidcvault-test');
const clientSecret = env('OP_CLIENT_SECRET', 'provider-test-secret-0123456789');
const tokenPath = env('OP_TOKEN_PATH', '/token');
const authMethod = env('OP_AUTH_METHOD', 'client_secret_basic');
const redirectUris = env('OP_REDIRECT_URIS', 'https://rp.example.test/callback')
  .split(/[\s,]+/).filter(Boolean);

const email = process.env.OP_ACCOUNT_EMAIL || null;
const account = email && (() => {
  const login = env('OP_ACCOUNT_LOGIN', email);
  const name = env('OP_ACCOUNT_NAME', 'Alice Example');
  const [givenName, ...family] = name.split(' ');
  return {
    login,
    password: process.env.OP_ACCOUNT_PASSWORD || null,
    sub: env('OP_ACCOUNT_SUB', login),
    claims: {
      email,
      email_verified: env('OP_ACCOUNT_EMAIL_VERIFIED', 'true') !== 'false',
      name,
      given_name: givenName,
      family_name: family.join(' ') || undefined,
    },
  };
})();

/** The configuration's sign-in part: the one account, its claims, consent given. */
function signIn() {
  if (!account) return {};
  return {
    // The session's accountId is the account's sub (the login form's check
    // below puts it there for the right login).
    async findAccount(_ctx, id) {
      if (id !== account.sub) return undefined;
      return {
        accountId: account.sub,
        async claims() {
          return { sub: account.sub, ...account.claims };
        },
      };
    },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'given_name', 'family_name'],
    },
    conformIdTokenClaims: env('OP_CLAIMS_IN_ID_TOKEN', 'false') !== 'true',
    // No consent page: the grant for what the client asks (openid email profile)
    // is given once the user has signed in.
    async loadExistingGrant(ctx) {
      const { oidc } = ctx;
      const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
      if (grantId) {
        const existing = await oidc.provider.Grant.find(grantId);
        if (existing) return existing;
      }
      const grant = new oidc.provider.Grant({ accountId: oidc.session.accountId, clientId: oidc.client.clientId });
      grant.addOIDCScope('openid email profile');
      await grant.save();
      return grant;
    },
    features: { devInteractions: { enabled: true } },
  };
}

const server = http.createServer();
server.listen(Number(env('OP_PORT', '0')), '127.0.0.1', () => {
  const { port } = server.address();
  const provider = new Provider(`http://127.0.0.1:${port}`, {
    clients: [{
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: redirectUris,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: authMethod,
    }],
    clientAuthMethods: [authMethod],
    routes: { token: tokenPath },
    cookies: { keys: ['oidcvault-test-cookie-key-not-secret'] },
    ...signIn(),
  });
  if (account) {
    // The devInteractions login accepts any login and password (and makes the
    // login the accountId): check them first.
    provider.use(async (ctx, next) => {
      const at = /^\/interaction\/([^/]+)$/.exec(ctx.path);
      if (ctx.method !== 'POST' || !at || !ctx.is('application/x-www-form-urlencoded')) return next();
      const chunks = [];
      for await (const chunk of ctx.req) chunks.push(chunk);
      const form = Object.fromEntries(new URLSearchParams(Buffer.concat(chunks).toString('utf8')));
      const refused = form.prompt === 'login'
        && (form.login !== account.login || (account.password !== null && form.password !== account.password));
      if (refused) {
        process.stderr.write('op: login refused (not the account or a wrong password)\n');
        ctx.status = 303;
        ctx.redirect(ctx.path);
        return undefined;
      }
      // Read by the provider's own body parser; the account is known by its sub.
      ctx.request.body = form.prompt === 'login' ? { ...form, login: account.sub } : form;
      return next();
    });
    // What happened, for a failing test's report (paths only: queries carry codes).
    provider.use(async (ctx, next) => {
      await next();
      process.stderr.write(`op: ${ctx.method} ${ctx.path} -> ${ctx.status}\n`);
    });
    provider.on('server_error', (_ctx, err) => process.stderr.write(`op: server_error ${err.stack}\n`));
    for (const event of ['authorization.error', 'grant.error', 'userinfo.error']) {
      provider.on(event, (_ctx, err) => process.stderr.write(`op: ${event} ${err.message} ${err.error_description || ''}\n`));
    }
  }
  server.on('request', provider.callback());
  process.stdout.write(`listening ${port}\n`);
});

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
// The harness closes our stdin when it goes away: never outlive it.
process.stdin.on('end', stop);
process.stdin.resume();
