# shellcheck shell=bash
# Sourced by run.sh and test.sh: exports the settings in .env (if present) that the environment
# does not already set, so `PORT=9000 make run` wins over a PORT line in .env.
load_dotenv() {
  local file="${1:-.env}" line key
  [ -f "$file" ] || return 0
  while IFS= read -r line || [ -n "$line" ]; do
    [[ "$line" =~ ^[[:space:]]*(export[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*)= ]] || continue
    key="${BASH_REMATCH[2]}"
    [ -n "${!key+x}" ] && continue
    line="${line#"${line%%[![:space:]]*}"}" # drop leading blanks
    line="${line#export }"
    # The file is the developer's own, as trusted as a sourced script; eval handles its quoting.
    eval "export $line"
  done <"$file"
}
