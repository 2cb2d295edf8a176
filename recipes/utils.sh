# Shared shell helpers for VoxLM recipes. Source after setting stage/stop_stage:
#   . ../../recipes/utils.sh

# log MESSAGE...: timestamped, with the calling script and line.
log() {
  local fname=${BASH_SOURCE[1]##*/}
  echo -e "$(date '+%Y-%m-%d %H:%M:%S') (${fname}:${BASH_LINENO[0]}) $*" >&2
}

# stage_enabled N: true when stage <= N <= stop_stage.
stage_enabled() {
  [ "$1" -ge "${stage:-0}" ] && [ "$1" -le "${stop_stage:-1000}" ]
}

# run_once SENTINEL CMD [ARGS...]: run CMD unless SENTINEL exists; create it on success.
# A killed or failed run leaves no sentinel, so the next run resumes (the commands
# themselves skip finished work). Delete the sentinel to force a rerun.
run_once() {
  local sentinel=$1; shift
  if [ -f "$sentinel" ]; then
    log "skip: $sentinel exists (delete it to rerun)"
    return 0
  fi
  "$@"
  mkdir -p "$(dirname "$sentinel")"
  date '+%Y-%m-%d %H:%M:%S' > "$sentinel"
}
