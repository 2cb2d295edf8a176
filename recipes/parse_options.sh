# Option parsing for VoxLM recipes (source it after defining the defaults):
#   stage=0; nj=2; . ../../recipes/parse_options.sh
# Every `--some-name value` or `--some_name=value` sets the shell variable
# some_name, which must already exist (a typo is an error, not a silent no-op).
# `--config FILE` sources FILE (shell assignments) first, so later options win.
# `--help` prints the variables named in $recipe_options (set by the recipe). Positional arguments are
# left in "$@".

_voxlm_usage() {
  echo "Usage: $0 [--name value ...]"
  echo "Options (current values):"
  local v
  for v in ${recipe_options:-stage stop_stage nj}; do
    echo "  --$v ${!v-}"
  done
}

_voxlm_positional=()
while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      _voxlm_usage; exit 0 ;;
    --*=*)
      _voxlm_name=${1%%=*}; _voxlm_value=${1#*=}; shift ;;
    --*)
      _voxlm_name=$1
      if [ $# -lt 2 ]; then echo "$0: option $1 needs a value" >&2; exit 1; fi
      _voxlm_value=$2; shift 2 ;;
    *)
      _voxlm_positional+=("$1"); shift; continue ;;
  esac
  _voxlm_name=${_voxlm_name#--}; _voxlm_name=${_voxlm_name//-/_}
  if [ "$_voxlm_name" = config ]; then
    if [ ! -f "$_voxlm_value" ]; then echo "$0: config file not found: $_voxlm_value" >&2; exit 1; fi
    # shellcheck disable=SC1090
    . "$_voxlm_value"
    continue
  fi
  if ! [[ "$_voxlm_name" =~ ^[a-zA-Z_][a-zA-Z0-9_]*$ ]]; then
    echo "$0: invalid option name --$_voxlm_name" >&2; exit 1
  fi
  if [ -z "${!_voxlm_name+x}" ]; then
    echo "$0: unknown option --$_voxlm_name (see --help)" >&2; exit 1
  fi
  printf -v "$_voxlm_name" '%s' "$_voxlm_value"
done
set -- ${_voxlm_positional[@]+"${_voxlm_positional[@]}"}
unset _voxlm_name _voxlm_value _voxlm_positional
