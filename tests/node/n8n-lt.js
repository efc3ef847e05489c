#!/usr/bin/env node
// The @n8n/localtunnel library (a maintained fork of the npm client, used by n8n) has no command
// of its own. This opens one tunnel with it at its defaults, as an application embedding it does,
// and prints the URL the way `lt` does. Usage: n8n-lt.js --host URL --port N [--subdomain NAME]
'use strict';
const localtunnel = require('@n8n/localtunnel');

function option(name) {
  const at = process.argv.indexOf('--' + name);
  return at > 0 ? process.argv[at + 1] : undefined;
}

async function main() {
  const tunnel = await localtunnel({
    host: option('host'), port: Number(option('port')), subdomain: option('subdomain'),
  });
  console.log('your url is: ' + tunnel.url);
  tunnel.on('error', (err) => { console.error('tunnel error: ' + err.message); process.exit(1); });
  tunnel.on('close', () => process.exit(0));
}

main().catch((err) => { console.error('could not open a tunnel: ' + err.message); process.exit(1); });
