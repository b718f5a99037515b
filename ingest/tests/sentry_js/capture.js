// Driven by ingest/tests/sentry.rs: the official Sentry Node SDK reports to a running ingest.
// SENTRY_DSN is a Faultline DSN. The same TypeError twice from one line (one group, count 2), a
// message (a second group) and a transaction, which Faultline accepts and drops.
const Sentry = require("@sentry/node");

Sentry.init({
  dsn: process.env.SENTRY_DSN,
  environment: "staging",
  release: "web@3.1.0",
  tracesSampleRate: 1.0,
  debug: true,
});

function parseOrder(id) {
  throw new TypeError(`order ${id} has no items`);
}

for (const id of [5, 6]) {
  try {
    parseOrder(id);
  } catch (e) {
    Sentry.captureException(e);
  }
}
Sentry.captureMessage("the node queue is backing up", "warning");
Sentry.startSpan({ name: "checkout" }, () => {});
Sentry.flush(20000).then((flushed) => {
  console.error(`sentry-node ${Sentry.SDK_VERSION} flushed=${flushed}`);
  process.exit(flushed ? 0 : 1);
});
