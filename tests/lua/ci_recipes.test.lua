-- The CI recipes of examples/ci (docs/ci.md), read by a YAML parser
-- (tests/lib/ci_lint.py, python3-yaml): they parse, they shard the suite
-- over a matrix, keep the cache, publish JUnit per shard and fail on a red
-- shard, and their provium command lines use options provium has.
local meta = require("lib.meta")

local root = meta.tests .. "/.."
local GITHUB = root .. "/examples/ci/github-actions.yml"
local GITLAB = root .. "/examples/ci/gitlab-ci.yml"

local function lint(kind, path)
    return meta.sh(("python3 %s %s %s %s"):format(meta.quote(meta.tests .. "/lib/ci_lint.py"),
        meta.quote(meta.bin), kind, meta.quote(path)))
end

local function read(path)
    local f = assert(io.open(path))
    local s = f:read("a")
    f:close()
    return s
end

test("the GitHub Actions workflow and the GitLab CI file pass the lint", function(t)
    local out, code = lint("--github", GITHUB)
    t:assert_eq(code, 0, out)
    t:assert_contains(out, "ok " .. GITHUB)
    out, code = lint("--gitlab", GITLAB)
    t:assert_eq(code, 0, out)
    t:assert_contains(out, "ok " .. GITLAB)
end)

-- Each case: the file, a change to it, what the lint must say.
local BROKEN = {
    { GITHUB, "--junit junit", "--junit-xml junit", "`--junit-xml` is not an option of provium" },
    { GITHUB, "shard: %[1, 2, 3, 4%]", "shard: [1, 2, 4]", "is not 1..SHARDS" },
    { GITHUB, "fail%-fast: false", "fail-fast: true", "strategy.fail-fast must be false" },
    { GITHUB, "needs: shard\n    if: always%(%)", "needs: shard", "no job that fails when a `shard` job failed" },
    { GITHUB, "jobs:", "jobs: [", "does not parse" },
    { GITLAB, "parallel: 4", "parallel: 4\n  allow_failure: true", "may fail without failing the pipeline" },
    { GITLAB, "when: always", "when: on_success", "not a JUnit report kept `when: always`" },
    { GITLAB, "provium kernel ensure", "provium kernel ensures", "not a `provium kernel` command" },
    { GITLAB, "CI_NODE_INDEX/", "CI_NODE_TOTAL/", "not CI_NODE_INDEX/CI_NODE_TOTAL" },
}

test("the lint finds what breaks a recipe", function(t)
    local d = meta.tmpdir()
    for i, case in ipairs(BROKEN) do
        local path, from, to, says = case[1], case[2], case[3], case[4]
        local text, n = read(path):gsub(from, (to:gsub("%%", "%%%%")), 1)
        t:assert_eq(n, 1, "the case's text is in " .. path .. ": " .. from)
        local copy = ("%s/%d.yml"):format(d, i)
        meta.write(copy, text)
        local out, code = lint(path == GITHUB and "--github" or "--gitlab", copy)
        t:assert_eq(code, 1, out)
        t:assert_contains(out, says)
    end
end)
