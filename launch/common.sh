# Sourced by launch/*.sh: how every launcher here runs torchrun and reports a stopped run.
#
# run_torchrun ARGS...   torchrun ARGS, with
#   - PYTHONFAULTHANDLER=1: a crash in native code (or a SIGABRT) prints every thread's Python stack;
#   - SIGUSR1 handled by torchrun as well as SIGTERM: it passes either to the workers, which save a
#     checkpoint and stop (torchrun's default list lacks SIGUSR1, which would kill torchrun alone);
#   - --shutdown-timeout=$STOP_WINDOW (default 120 s): how long torchrun waits for that checkpoint
#     before it kills the workers (its own default, 30 s, cuts off a large model's checkpoint);
#   - SIGUSR1 and SIGTERM sent to this script passed on to torchrun.
# Sets `status` to torchrun's exit status.
#
# report_stop RUN_DIR HOW_TO_CONTINUE   if the run stopped on a signal during run_torchrun (it left
#   RUN_DIR/stopped): say at which step and how to continue, and exit 75 (EX_TEMPFAIL).

export PYTHONFAULTHANDLER="${PYTHONFAULTHANDLER:-1}"
# Each rendezvous round gets a fresh store for its workers. torchrun's default hands them the
# agents' own store, which outlives the workers: after a restart on several nodes (whose restart
# counts differ: a node restarts its workers for a failure, the others for a membership change)
# the new workers hang in init_process_group, and a node that comes back cannot rejoin.
export TORCH_DISABLE_SHARE_RDZV_TCP_STORE="${TORCH_DISABLE_SHARE_RDZV_TCP_STORE:-1}"
started_at=$(date +%s)

run_torchrun() {
    "${VENV:-.venv}/bin/torchrun" --signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1 \
        --shutdown-timeout="${STOP_WINDOW:-120}" "$@" &
    local child=$!
    trap 'kill -USR1 "$child" 2>/dev/null' USR1
    trap 'kill -TERM "$child" 2>/dev/null' TERM
    # `wait` returns early when a trapped signal arrives; wait again until torchrun has ended.
    while true; do
        status=0
        wait "$child" || status=$?
        kill -0 "$child" 2>/dev/null || break
    done
    trap - USR1 TERM
}

report_stop() {
    local marker="$1/stopped"
    # Only a marker written by this run: one left by an earlier stop is removed when a run resumes.
    if [ -f "$marker" ] && [ "$(stat -c %Y "$marker")" -ge "$started_at" ]; then
        echo "clr_dist: stopped at step $(cat "$marker") with a checkpoint in $1; continue with: $2" >&2
        exit 75
    fi
}

# The command line that ran this script, quoted for a shell: "bash launch/x.sh arg1 'arg 2'".
command_line() {
    printf 'bash %q' "$0"
    printf ' %q' "$@"
}
