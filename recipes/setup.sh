# Bootstrap a VoxLM checkout, idempotently; sourced by the recipes and tests/run.sh.
#   . recipes/setup.sh     -> exports VOXLM_ROOT, VOXLM_PY (the venv's python)
# First run: Debian speech tools, chromium and ffmpeg (when missing and we may install), a .venv,
# the CPU build of torch (a plain `torch` requirement would pull a multi-GB CUDA
# build), then `pip install -e .[dev]`. Later runs check a stamp and return in
# well under a second. VOXLM_SKIP_APT=1 skips the system packages;
# VOXLM_VENV=path uses another venv.

VOXLM_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export VOXLM_ROOT
_venv=${VOXLM_VENV:-$VOXLM_ROOT/.venv}
export VOXLM_PY=$_venv/bin/python
_voxlm_torch=torch==2.13.0

# synth_en's timbre voices, package suffix:voice dir (voices of other languages, for the flow)
_voxlm_timbre_voices="czech-dita:czech/czech_dita czech-krb:czech/czech_krb czech-machac:czech/czech_machac
  czech-ph:czech/czech_ph italp16k:italian/lp_diphone itapc16k:italian/pc_diphone ca-ona-hts:catalan/upc_ca_ona_hts
  suopuhe-lj:finnish/suo_fi_lj_diphone suopuhe-mv:finnish/hy_fi_mv_diphone ru:russian/msu_ru_nsh_clunits"
_voxlm_apt_packages="flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts sox fortunes chromium ffmpeg"
_voxlm_need_apt() {  # prints the packages whose files are missing
  local missing=""
  command -v flite >/dev/null || missing+=" flite"
  command -v text2wave >/dev/null || missing+=" festival"
  [ -d /usr/share/festival/voices/english/kal_diphone ] || missing+=" festvox-kallpc16k"
  [ -d /usr/share/festival/voices/english/ked_diphone ] || missing+=" festvox-kdlpc16k"
  [ -d /usr/share/festival/voices/us/cmu_us_slt_arctic_hts ] || missing+=" festvox-us-slt-hts"
  for v in $_voxlm_timbre_voices; do
    [ -d "/usr/share/festival/voices/${v#*:}" ] || missing+=" festvox-${v%%:*}"
  done
  command -v sox >/dev/null || missing+=" sox"
  [ -f /usr/share/games/fortunes/fortunes ] || missing+=" fortunes"
  command -v chromium >/dev/null || missing+=" chromium"  # the demo's browser tests
  command -v ffmpeg >/dev/null || missing+=" ffmpeg"  # gradio encodes the demo's audio stream with it
  echo "$missing"
}

_voxlm_stamp="$_venv/.voxlm-install-stamp"
_voxlm_want_stamp() {  # changes whenever the package metadata changes
  cat "$VOXLM_ROOT/setup.cfg" "$VOXLM_ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1
}

_voxlm_setup() {
  local missing
  missing=$(_voxlm_need_apt)
  if [ -n "$missing" ] && [ -z "${VOXLM_SKIP_APT:-}" ]; then
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo -n"
    if command -v apt-get >/dev/null && { [ -z "$sudo" ] || sudo -n true 2>/dev/null; }; then
      echo "[setup] installing Debian packages:$missing" >&2
      $sudo apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >&2 \
        || echo "[setup] WARNING: apt-get failed; recipes that need$missing will say so" >&2
    else
      echo "[setup] WARNING: missing$missing and no permission to apt-get install them" >&2
    fi
  fi
  if [ ! -x "$VOXLM_PY" ]; then
    echo "[setup] creating $_venv" >&2
    python3 -m venv "$_venv" || return 1
    "$VOXLM_PY" -m pip install -q --upgrade pip >&2 || return 1
  fi
  if ! "$VOXLM_PY" -c "import torch" 2>/dev/null; then
    echo "[setup] installing $_voxlm_torch (CPU build)" >&2
    "$VOXLM_PY" -m pip install -q "$_voxlm_torch" >&2 || return 1
  fi
  if [ "$(cat "$_voxlm_stamp" 2>/dev/null)" != "$(_voxlm_want_stamp)" ]; then
    echo "[setup] pip install -e .[dev]" >&2
    "$VOXLM_PY" -m pip install -q -e "$VOXLM_ROOT[dev]" >&2 || return 1
    _voxlm_want_stamp > "$_voxlm_stamp"
  fi
}

if [ -n "$(_voxlm_need_apt)" ] || [ "$(cat "$_voxlm_stamp" 2>/dev/null)" != "$(_voxlm_want_stamp)" ]; then
  _voxlm_setup || { echo "[setup] FAILED" >&2; return 1 2>/dev/null || exit 1; }
fi
export PATH="$_venv/bin:$PATH"
