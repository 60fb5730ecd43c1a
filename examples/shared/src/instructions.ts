/** What `npm start` prints: how to try each tier with curl, the browser page and the demo. */
export function printInstructions(
  framework: string,
  base: string,
  mode: 'embedded' | 'configured',
  records = "this process's memory",
): void {
  const token = (score: number) => `$(npm run -s token -- --client alice --score ${score})`;
  console.log(`
KOS example (${framework}) listening on ${base}  [${mode === 'embedded' ? `embedded default: keys, metadata and 5 KMS nodes in ${process.env.KOS_DIR ?? './.kos'}` : 'configured'}]
Records (sealed envelopes) are kept in ${records}.

Try the three tiers (tokens are development identity tokens for client "alice"):

  HIGH=${token(90)}; MEDIUM=${token(65)}; LOW=${token(30)}

  # write a record (sealed under the "records" key)
  curl -s -X POST ${base}/records -H "authorization: Bearer $HIGH" -H 'content-type: application/json' -d '{"patient":"Ada","diagnosis":"flu"}'

  curl -si ${base}/records -H "authorization: Bearer $LOW"      # low (<50): plaintext, decrypted by KOS
  curl -si ${base}/records -H "authorization: Bearer $MEDIUM"   # medium (50-80): envelope + k-of-n share references + grant
  curl -si ${base}/records -H "authorization: Bearer $HIGH"     # high (>80): envelope + DEK
  curl -si ${base}/records                                       # no token: 401 ERR_UNAUTHENTICATED

Browser page (opens high and medium tier in the page): ${base}/
Scripted client through all three tiers:             npm run demo
Stop with Ctrl-C.
`);
}
