/**
 * An `sh -c` script that runs "$@" in the background, prints `<pidTag> <pid>`, waits for it and
 * exits with its status; when whoever spawned it dies in any way (even SIGKILL), its end of our
 * stdin closes and the watcher kills the child, so no child outlives its supervisor. Used by
 * the test Redis servers and by `npm run cluster`.
 */
export function watchdogScript(pidTag: string): string {
  return `
exec 3<&0
"$@" </dev/null &
pid=$!
echo "${pidTag} $pid"
( while read -r _ <&3; do :; done; kill -KILL "$pid" 2>/dev/null ) &
watcher=$!
wait "$pid"
status=$?
kill "$watcher" 2>/dev/null
exit "$status"
`;
}
