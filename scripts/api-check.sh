#!/usr/bin/env bash
# The public API check of the library crates (`spliceway`, `spliceway-config`), run by .ci/run.
#
# cargo-semver-checks compares the API of this tree with a baseline commit (default: the
# previous commit, HEAD~1; set API_BASELINE to choose another, e.g. the last release tag).
# Before 1.0 a change may break the API, but never silently: every item cargo-semver-checks
# reports as broken must be named in the lines this change adds to CHANGELOG.md. So:
#   - no break: pass;
#   - breaks, each named in CHANGELOG.md's added lines: pass, listing them;
#   - a break the changelog does not mention: fail, naming it.
# A clone without the baseline commit (shallow, or a first commit) is skipped with a message.
set -euo pipefail
cd "$(dirname "$0")/.."

baseline=${API_BASELINE:-HEAD~1}
if ! base_sha=$(git rev-parse --verify -q "$baseline^{commit}"); then
    echo "api-check: skipped: baseline $baseline is not in this clone"
    exit 0
fi
if ! command -v cargo-semver-checks >/dev/null 2>&1; then
    echo "api-check: cargo-semver-checks is not installed (cargo install --locked cargo-semver-checks)" >&2
    exit 1
fi

report=$(mktemp)
trap 'rm -f "$report"' EXIT
status=0
for crate in spliceway spliceway-config; do
    # A crate the baseline did not have yet has no API to break.
    if ! git cat-file -e "$base_sha:crates/$crate/Cargo.toml" 2>/dev/null; then
        echo "api-check: $crate: not in the baseline, nothing to compare"
        continue
    fi
    if cargo semver-checks check-release -p "$crate" --baseline-rev "$base_sha" >"$report" 2>&1; then
        echo "api-check: $crate: no breaking change since ${base_sha:0:12}"
        continue
    fi
    if ! grep -q 'Failed in:' "$report"; then
        # Not a semver verdict: the tool itself failed (a build error, say).
        cat "$report" >&2
        echo "api-check: $crate: cargo-semver-checks failed to run" >&2
        exit 1
    fi
    # Items reported as broken: the lines after "Failed in:", e.g.
    #   "  enum Upstream in /path/route/upstream.rs:17" or "  Relay::run, previously in file ...".
    items=$(awk '/^Failed in:/ {f=1; next} f && /^[[:space:]]*$/ {f=0} f' "$report" |
        sed -E 's/^[[:space:]]+//; s/,? (previously )?in .*$//; s/^(enum|struct|trait|function|fn|type|union|mod|const|static|macro|variant|field|method|impl) //' |
        sed -E 's/^.*[ ]//' | sort -u)
    added=$(git diff "$base_sha" -- CHANGELOG.md | grep -E '^\+[^+]' || true)
    missing=()
    while IFS= read -r item; do
        [ -n "$item" ] || continue
        # Match the last path segment (`Upstream`, `Relay::run` -> `run` or the whole).
        short=${item##*::}
        if ! grep -qF -- "$item" <<<"$added" && ! grep -qF -- "$short" <<<"$added"; then
            missing+=("$item")
        fi
    done <<<"$items"
    if [ ${#missing[@]} -gt 0 ]; then
        cat "$report" >&2
        echo "api-check: $crate: breaking changes not listed in CHANGELOG.md: ${missing[*]}" >&2
        status=1
    else
        echo "api-check: $crate: breaking changes since ${base_sha:0:12}, each listed in CHANGELOG.md:" \
            "$(tr '\n' ' ' <<<"$items")"
    fi
done
exit $status
