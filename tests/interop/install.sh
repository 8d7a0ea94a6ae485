#!/usr/bin/env bash
# Installs the clients nobody here wrote into DIR (default build/interop), for
# tests/test_interop.py: npm packages (the official TypeScript SDK, MCP Inspector, and a
# Node >= 22.19 from npm's `node` package, which the Inspector needs) and a virtual
# environment with two Python agent frameworks.  When a registry cannot be reached it
# writes DIR/UNAVAILABLE saying so, and the tests skip with that reason.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${1:-build/interop}"
mkdir -p "$dir"
rm -f "$dir/UNAVAILABLE"
cp "$here/package.json" "$dir/package.json"
echo "interop: npm install into $dir (the TypeScript SDK, MCP Inspector, Node 22)"
if ! command -v npm >/dev/null 2>&1; then
    echo "npm is not installed: the TypeScript SDK and MCP Inspector tests cannot run" >> "$dir/UNAVAILABLE"
elif ! (cd "$dir" && npm install --no-audit --no-fund --loglevel=error > npm.log 2>&1); then
    echo "npm install failed (is the npm registry reachable?): $(tail -n 3 "$dir/npm.log" | tr '\n' ' ')" >> "$dir/UNAVAILABLE"
fi
echo "interop: pip install into $dir/venv (pydantic-ai, the OpenAI Agents SDK)"
python3 -m venv "$dir/venv" || echo "python3 -m venv failed" >> "$dir/UNAVAILABLE"
if [ -x "$dir/venv/bin/pip" ] && ! "$dir/venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" > "$dir/pip.log" 2>&1; then
    echo "pip install of the Python frameworks failed (is PyPI reachable?): $(tail -n 3 "$dir/pip.log" | tr '\n' ' ')" >> "$dir/UNAVAILABLE"
fi
touch "$dir/.installed"
