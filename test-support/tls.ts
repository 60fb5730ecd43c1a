import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** PEM material of a throw-away test PKI: a CA, a server certificate for loopback, a client certificate. */
export interface TestPki {
  readonly dir: string;
  readonly caCert: string;
  readonly serverCert: string;
  readonly serverKey: string;
  readonly clientCert: string;
  readonly clientKey: string;
  /** A client certificate from another CA (must be refused under mutual TLS). */
  readonly strangerCert: string;
  readonly strangerKey: string;
  /** Paths of the same files, for command-line tools. */
  readonly paths: Record<'caCert' | 'serverCert' | 'serverKey' | 'clientCert' | 'clientKey', string>;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: 'pipe' });
}

function issue(dir: string, name: string, subject: string, caName: string, extensions: string): void {
  openssl(
    [
      'req',
      '-new',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.csr`,
      '-subj',
      subject,
    ],
    dir,
  );
  writeFileSync(join(dir, `${name}.ext`), extensions);
  openssl(
    [
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      `${caName}.crt`,
      '-CAkey',
      `${caName}.key`,
      '-CAcreateserial',
      '-out',
      `${name}.crt`,
      '-days',
      '2',
      '-sha256',
      '-extfile',
      `${name}.ext`,
    ],
    dir,
  );
}

function makeCa(dir: string, name: string): void {
  openssl(
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.crt`,
      '-days',
      '2',
      '-subj',
      `/CN=${name}`,
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ],
    dir,
  );
}

/** Creates a fresh test CA with server (127.0.0.1, localhost) and client certificates, using the openssl command. */
export function createTestPki(): TestPki {
  const dir = mkdtempSync(join(tmpdir(), 'kos-pki-'));
  makeCa(dir, 'test-ca');
  makeCa(dir, 'stranger-ca');
  issue(
    dir,
    'server',
    '/CN=kms-node',
    'test-ca',
    'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n',
  );
  issue(dir, 'client', '/CN=kos', 'test-ca', 'extendedKeyUsage=clientAuth\n');
  issue(dir, 'stranger', '/CN=stranger', 'stranger-ca', 'extendedKeyUsage=clientAuth\n');
  const read = (file: string) => readFileSync(join(dir, file), 'utf8');
  return {
    dir,
    caCert: read('test-ca.crt'),
    serverCert: read('server.crt'),
    serverKey: read('server.key'),
    clientCert: read('client.crt'),
    clientKey: read('client.key'),
    strangerCert: read('stranger.crt'),
    strangerKey: read('stranger.key'),
    paths: {
      caCert: join(dir, 'test-ca.crt'),
      serverCert: join(dir, 'server.crt'),
      serverKey: join(dir, 'server.key'),
      clientCert: join(dir, 'client.crt'),
      clientKey: join(dir, 'client.key'),
    },
  };
}
