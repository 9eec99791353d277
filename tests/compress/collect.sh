#!/usr/bin/env bash
# Rebuilds the compression corpus (tests/compress/corpus/) from real commands run on real
# public projects. Not run by CI: the outputs are checked in, so the tests and
# `cargo bench --bench gateway -- compress` read exactly what was recorded here.
#
# Needs: a checkout of each project under $WORK (see PROJECTS below), a Python venv with
# pytest, ruff, mypy and hypothesis at $WORK/venv, `npm install` done in express, and
# ripgrep, cmake and tree. Each record writes <id>.out (stdout and stderr as an agent's shell
# tool sees them, interleaved) and appends its command, project and exit status to
# corpus/index.tsv; tests/compress/keep.py then lists the strings a model needs from each.
#
# PROJECTS (public): clutch (this repository), dtolnay/semver, pytest-dev/pluggy,
# python-attrs/attrs, expressjs/express, redis/hiredis.
set -u
WORK=${WORK:-/tmp/cw}
OUT=$(cd "$(dirname "$0")" && pwd)/corpus
mkdir -p "$OUT"
: > "$OUT/index.tsv"
export PATH="$WORK/venv/bin:$PATH" CARGO_TERM_COLOR=never NO_COLOR=1 TERM=dumb
export CARGO_TARGET_DIR=$WORK/target

# record <id> <kind> <project dir> <command>
record() {
    local id=$1 kind=$2 dir=$3 cmd=$4 project
    project=$(basename "$dir")@$(git -C "$dir" rev-parse --short=10 HEAD 2>/dev/null || echo -)
    (cd "$dir" && timeout 900 bash -c "$cmd" > "$OUT/$id.out" 2>&1)
    local status=$?
    printf '%s\t%s\t%s\t%s\t%s\n' "$id" "$kind" "$project" "$status" "$cmd" >> "$OUT/index.tsv"
    printf '%-28s exit %3s  %8s bytes\n' "$id" "$status" "$(wc -c < "$OUT/$id.out")"
}

C=$WORK/clutch S=$WORK/semver P=$WORK/pluggy A=$WORK/attrs E=$WORK/express H=$WORK/hiredis
git -C "$C" checkout -q -- . && git -C "$S" checkout -q -- . && git -C "$P" checkout -q -- .
git -C "$A" checkout -q -- . && git -C "$E" checkout -q -- . && git -C "$H" checkout -q -- .

# --- cargo ---------------------------------------------------------------------------
record cargo-build-ok          cargo  "$S" "cargo build"
record cargo-build-verbose     cargo  "$S" "touch src/lib.rs && cargo build -v"
record cargo-test-ok           cargo  "$S" "cargo test"
sed -i 's/assert_eq!(parsed.major, 1);/assert_eq!(parsed.major, 2);/' "$S/tests/test_version.rs"
sed -i '0,/assert!(/s//assert!(1 + 1 == 3 \&\& /' "$S/tests/test_version_req.rs"
record cargo-test-fail         cargo  "$S" "cargo test"
git -C "$S" checkout -q -- .
sed -i '0,/pub fn parse(text: &str) -> Result<Self, Error> {/s//pub fn parse(text: \&str) -> Result<Self, Error> {\n        let unused: u32 = text.len();/' "$S/src/lib.rs"
record cargo-check-error       cargo  "$S" "cargo check"
git -C "$S" checkout -q -- .
sed -i 's/^    pub major: u64,/    pub    major :   u64,/; s/^use /use   /' "$S/src/lib.rs"
record cargo-fmt-check         cargo  "$S" "cargo fmt --check"
git -C "$S" checkout -q -- .
record cargo-clippy-pedantic   cargo  "$S" "cargo clippy --all-targets -- -W clippy::pedantic"
record cargo-doc               cargo  "$S" "cargo doc --no-deps"
record cargo-clippy-big        cargo  "$C" "cargo clippy --lib -- -W clippy::pedantic -W clippy::nursery"
sed -i '0,/^pub fn /s//pub fn broken_on_purpose() -> u32 { "not a number" }\npub fn /' "$C/src/gateway/route.rs"
record cargo-clippy-one-error  cargo  "$C" "cargo clippy --lib -- -W clippy::pedantic"
git -C "$C" checkout -q -- .
record cargo-tree              cargo  "$C" "cargo tree"
record cargo-metadata          json   "$C" "cargo metadata --no-deps --format-version 1"
record cargo-test-list         cargo  "$C" "cargo test --lib -- --list"
record cargo-test-lib          cargo  "$C" "cargo test --lib"

# --- git -----------------------------------------------------------------------------
sed -i 's/Duration::from_secs(/Duration::from_secs( /' "$C/src/gateway/route.rs" "$C/src/config.rs"
echo scratch > "$C/notes.txt"; mkdir -p "$C/scratch" && echo x > "$C/scratch/a.rs"
git -C "$C" rm -q --cached README.md
record git-status              git    "$C" "git status"
record git-diff                git    "$C" "git diff"
git -C "$C" checkout -q -- . && git -C "$C" reset -q && rm -rf "$C/notes.txt" "$C/scratch"
record git-diff-range          git    "$C" "git diff HEAD~4 HEAD"
record git-diff-stat           git    "$C" "git diff --stat HEAD~30 HEAD"
record git-log                 git    "$C" "git log -n 40"
record git-log-stat            git    "$C" "git log --stat -n 12"
record git-log-oneline         git    "$C" "git log --oneline -n 300"
record git-show                git    "$C" "git show HEAD~2"
for b in feature/usage-ledger fix/rate-limit-scope spike/compress wip/scan-jobs; do git -C "$C" branch -q -f "$b" HEAD~3; done
record git-branch              git    "$C" "git branch -a -vv"
record git-blame               git    "$C" "git blame src/gateway/secrets.rs"
record git-log-express         git    "$E" "git log -n 25 --format=fuller"
record git-show-express        git    "$E" "git show --stat HEAD~1 && git show HEAD~5"

# --- search and listings ------------------------------------------------------------
record grep-fn                 search "$C" "grep -rn 'fn ' src"
record grep-todo-node-modules  search "$E" "grep -rn 'TODO' node_modules --include=*.js"
record rg-unwrap               search "$C" "rg -n 'unwrap\(\)' src tests"
record rg-files                search "$E" "rg --files node_modules | head -3000"
record find-rs                 search "$C" "find . -path ./.git -prune -o -name '*.rs' -print"
record find-package-json       search "$E" "find node_modules -name package.json"
record ls-la                   search "$E" "ls -la node_modules"
record ls-recursive            search "$C" "ls -R src tests"
record tree-express            search "$E" "tree -L 3 lib test examples"

# --- python --------------------------------------------------------------------------
record pytest-ok               python "$P" "python -m pytest -q"
record pytest-verbose          python "$P" "python -m pytest -v testing/test_hookcaller.py testing/test_pluginmanager.py"
sed -i '0,/assert /s//assert 2 == 3 and /' "$P/testing/test_hookcaller.py"
sed -i '0,/assert /s//assert "no" in "yes" and /' "$P/testing/test_details.py"
record pytest-fail             python "$P" "python -m pytest"
git -C "$P" checkout -q -- .
(cd "$A" && python -m pip install -q -e .)
record pytest-attrs            python "$A" "python -m pytest -q -p no:cacheprovider tests/test_make.py tests/test_funcs.py"
sed -i '0,/        assert /s//        assert False, "broken on purpose"\n        assert /' "$A/tests/test_funcs.py"
record pytest-attrs-fail       python "$A" "python -m pytest -x -p no:cacheprovider tests/test_funcs.py"
git -C "$A" checkout -q -- .
record mypy-strict             python "$P" "python -m mypy --strict src/pluggy testing"
record mypy-attrs              python "$A" "python -m mypy src/attr"
record ruff-all                python "$A" "ruff check --select ALL --no-cache src"
record ruff-pluggy             python "$P" "ruff check --select ALL --no-cache ."
record ruff-format             python "$A" "ruff format --check --no-cache ."
record pip-install             python "$P" "python -m pip install --no-cache-dir -e ."
record pip-install-verbose     python "$P" "python -m pip install -v --no-cache-dir --force-reinstall --no-deps ."
record pip-list                python "$P" "python -m pip list"
record pip-list-json           json   "$P" "python -m pip list --format json"
record python-traceback        python "$P" "python -c 'import pluggy; pm = pluggy.PluginManager(\"x\"); pm.add_hookspecs(object()); pm.hook.missing(arg=1)'"

# --- npm / node ----------------------------------------------------------------------
record npm-test                npm    "$E" "npm test"
sed -i "0,/\.expect(200, 'tobi', done)/s//.expect(200, 'loki', done)/" "$E/test/app.router.js"
sed -i "0,/assert.strictEqual(/s//assert.strictEqual('broken', /" "$E/test/utils.js"
record npm-test-fail           npm    "$E" "npm test"
git -C "$E" checkout -q -- .
record npm-ls                  npm    "$E" "npm ls --all"
record npm-ls-json             json   "$E" "npm ls --all --json"
record eslint                  npm    "$E" "npx eslint --rule '{\"no-var\": \"error\", \"prefer-const\": \"warn\"}' lib test"
record npm-install-verbose     npm    "$E" "rm -rf node_modules/.package-lock.json node_modules/qs && npm install --no-audit --no-fund --loglevel http"
record npm-outdated            npm    "$E" "npm outdated"
record node-stack              npm    "$E" "node -e \"require('./')().get('/', (req, res) => { throw new Error('handler broke') }).listen(0, function () { require('http').get('http://127.0.0.1:' + this.address().port + '/', r => { let b = ''; r.on('data', d => b += d); r.on('end', () => { console.log(r.statusCode, b); process.exit(1) }) }) })\""
record cat-package-lock        json   "$E" "cat package-lock.json"

# --- make / cmake / C ----------------------------------------------------------------
record make-ok                 build  "$H" "make clean >/dev/null; make"
record make-warnings           build  "$H" "make clean >/dev/null; make WARNINGS='-Wall -Wextra -Wconversion -Wsign-conversion -Wshadow -Wcast-qual'"
sed -i '0,/^static void __redisReaderSetError/s//static int broken(void) { return undefined_symbol; }\nstatic void __redisReaderSetError/' "$H/read.c"
record make-error              build  "$H" "make clean >/dev/null; make"
git -C "$H" checkout -q -- .
record cmake-configure         build  "$H" "rm -rf build && cmake -B build -DCMAKE_BUILD_TYPE=Debug"
record cmake-build             build  "$H" "cmake --build build -j2 -- VERBOSE=1"
record make-clean-n            build  "$H" "make -n"

# --- logs and files -----------------------------------------------------------------
record dpkg-log                log    "$C" "tail -n 1500 /var/log/dpkg.log"
record apt-log                 log    "$C" "tail -n 400 /var/log/apt/term.log"
record read-source             read   "$C" "cat -n src/gateway/secrets.rs"
record read-readme             read   "$E" "cat Readme.md"
