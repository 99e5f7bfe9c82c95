#!/bin/bash
# distribute-node: entry point of the git-distribute worker image (README: "Vast.ai nodes").
#
# Configured entirely from the environment; every value is used as data (quoted, passed as one
# argument), never evaluated as shell text:
#   DISTRIBUTE_REMOTE        the shared git remote                                  (required)
#   DISTRIBUTE_RUN           MODULE:FUNCTION called for each job                    (required)
#   DISTRIBUTE_NAME          worker name                          (default vast-$CONTAINER_ID)
#   DISTRIBUTE_SELF_DESTRUCT 1: destroy this instance once the queue is done, with the key Vast
#                            gives each instance (CONTAINER_API_KEY; else VAST_API_KEY if sent)
#   DISTRIBUTE_EXTRA_PIP     requirement specifiers, blank-separated, pip-installed first
#   DISTRIBUTE_SSH_KEY       private deploy key for an ssh remote (or DISTRIBUTE_SSH_KEY_B64)
#   DISTRIBUTE_SSH_KNOWN_HOSTS  known_hosts lines for that host (default: trust on first use)
#   DISTRIBUTE_SSH_REUSE     0: a new ssh connection per git command (default: one shared
#                            connection per host, OpenSSH ControlMaster, set up in ~/.ssh/config)
#   DISTRIBUTE_GIT_TOKEN     token for an https remote; DISTRIBUTE_GIT_USER (x-access-token)
# With arguments it prepares credentials and packages the same way, then runs the arguments
# instead of the worker. Vast keys (VAST_API_KEY, CONTAINER_API_KEY, VAST_NODE_API_KEY) are not
# passed to pip, nor to the worker unless it will destroy the instance (it then moves them out of
# its environment before the first job).
set -euo pipefail
umask 077

say() { printf 'distribute-node: %s\n' "$*" >&2; }
die() { say "$*"; exit 64; }
vast_keys=(-u VAST_API_KEY -u CONTAINER_API_KEY -u VAST_NODE_API_KEY)

home=${HOME:?HOME is not set}

# The directory of shared ssh connections: ours, mode 0700, short enough for a socket path.
ssh_control_dir() {
    local dir=${DISTRIBUTE_SSH_CONTROL_DIR:-/tmp/distribute-ssh-$(id -u)}
    [[ $dir =~ ^/[A-Za-z0-9._/-]{1,44}$ ]] || return 1
    [[ -e $dir || -L $dir ]] || mkdir -m 700 -- "$dir" 2>/dev/null || return 1
    [[ -d $dir && ! -L $dir && -O $dir && $(stat -c %a -- "$dir") == 700 ]] || return 1
    printf '%s' "$dir"
}

# One ssh connection per host shared by all git commands (ControlMaster) instead of a new one
# each (~0.2 s). In ~/.ssh/config, so that GIT_SSH_COMMAND stays the deploy key's alone; a config
# file of the user's own is left alone, ours is rewritten (or removed) on every start.
share_ssh_connections() {
    local config="$home/.ssh/config" marker="# distribute-node: shared ssh connections" dir
    if [[ -e $config && $(head -n 1 -- "$config" 2>/dev/null) != "$marker" ]]; then
        return 0
    fi
    rm -f -- "$config"
    local reuse
    reuse=$(python -W ignore::RuntimeWarning -m distribute.settings flag DISTRIBUTE_SSH_REUSE 1) ||
        die "DISTRIBUTE_SSH_REUSE is not an on/off value: not starting"
    [[ $reuse == 1 ]] || return 0
    if ! dir=$(ssh_control_dir); then
        say "ssh connection reuse off: no private socket directory"
        return 0
    fi
    printf '%s\nHost *\n    ControlMaster auto\n    ControlPath %s/%%C\n    ControlPersist 60\n' \
        "$marker" "$dir" >"$config"
}

# An SSH deploy key: written to a file only this user can read, never printed.
if [[ -n "${DISTRIBUTE_SSH_KEY:-}${DISTRIBUTE_SSH_KEY_B64:-}" ]]; then
    mkdir -p -- "$home/.ssh"
    key_file="$home/.ssh/distribute_deploy_key"
    rm -f -- "$key_file"
    if [[ -n "${DISTRIBUTE_SSH_KEY_B64:-}" ]]; then
        printf '%s' "$DISTRIBUTE_SSH_KEY_B64" | base64 -d >"$key_file" 2>/dev/null \
            || die "DISTRIBUTE_SSH_KEY_B64 is not valid base64"
    else
        key=$DISTRIBUTE_SSH_KEY
        if [[ $key != *$'\n'* ]]; then # one line with literal \n, as some forms flatten it
            key=${key//\\n/$'\n'}
        fi
        printf '%s\n' "$key" >"$key_file"
        unset key
    fi
    chmod 600 -- "$key_file"
    checking=accept-new
    if [[ -n "${DISTRIBUTE_SSH_KNOWN_HOSTS:-}" ]]; then
        printf '%s\n' "$DISTRIBUTE_SSH_KNOWN_HOSTS" >"$home/.ssh/known_hosts"
        checking=yes
    fi
    printf -v quoted_key '%q' "$key_file"
    export GIT_SSH_COMMAND="ssh -i $quoted_key -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=$checking"
    share_ssh_connections
    say "SSH deploy key installed"
fi
unset DISTRIBUTE_SSH_KEY DISTRIBUTE_SSH_KEY_B64

# An HTTPS token: handed to git by a credential helper that reads it from the environment at
# the moment git asks, and only for the remote's own host (not for pip's downloads elsewhere).
if [[ -n "${DISTRIBUTE_GIT_TOKEN:-}" ]]; then
    if [[ ${DISTRIBUTE_REMOTE:-} =~ ^(https?://)([^/@]*@)?([^/?#]+) ]]; then
        export DISTRIBUTE_GIT_USER="${DISTRIBUTE_GIT_USER:-x-access-token}"
        n=${GIT_CONFIG_COUNT:-0}
        export "GIT_CONFIG_KEY_$n=credential.${BASH_REMATCH[1]}${BASH_REMATCH[3]}.helper"
        # shellcheck disable=SC2016 # expanded by git's shell when it asks, on purpose
        export "GIT_CONFIG_VALUE_$n="'!f() { test "$1" = get || exit 0; printf "username=%s\npassword=%s\n" "$DISTRIBUTE_GIT_USER" "$DISTRIBUTE_GIT_TOKEN"; }; f'
        export GIT_CONFIG_COUNT=$((n + 1))
        say "HTTPS token set up for ${BASH_REMATCH[1]}${BASH_REMATCH[3]}"
    else
        say "DISTRIBUTE_GIT_TOKEN ignored: DISTRIBUTE_REMOTE is not an https:// URL"
    fi
fi

# The user's own code.
if [[ -n "${DISTRIBUTE_EXTRA_PIP:-}" ]]; then
    read -r -d '' -a packages <<<"$DISTRIBUTE_EXTRA_PIP" || true
    say "pip install ${#packages[@]} extra requirement(s)"
    env "${vast_keys[@]}" \
        pip install --user --no-cache-dir --disable-pip-version-check --quiet -- "${packages[@]}"
fi

if (($# > 0)); then
    exec "$@"
fi

[[ -n "${DISTRIBUTE_REMOTE:-}" ]] || die "DISTRIBUTE_REMOTE is not set: the URL of the shared git remote"
[[ -n "${DISTRIBUTE_RUN:-}" ]] || die "DISTRIBUTE_RUN is not set: MODULE:FUNCTION to call for each job"
name=${DISTRIBUTE_NAME:-vast-${CONTAINER_ID:-${HOSTNAME:-node}}}

# The package's own reading of the flag (1/true/yes/on, 0/false/no/off); it names a bad value.
# (-W: running a module of an imported package makes runpy warn; harmless here.)
if ! self_destruct=$(python -W ignore::RuntimeWarning -m distribute.settings flag \
    DISTRIBUTE_SELF_DESTRUCT); then
    die "DISTRIBUTE_SELF_DESTRUCT is not an on/off value: not starting"
fi

set -- worker "--run=$DISTRIBUTE_RUN" "--name=$name" --idle-exit
if [[ $self_destruct == 1 ]]; then
    set -- "$@" --self-destruct
    vast_keys=(-u VAST_NODE_API_KEY) # the worker needs the others, and hides them from jobs
fi
say "starting worker $name"
exec env "${vast_keys[@]}" distribute "$@" -- "$DISTRIBUTE_REMOTE"
