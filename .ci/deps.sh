#!/usr/bin/env bash
# Installs the system packages LiveDrops needs and the machine lacks, with Debian's apt-get.
# Usage: .ci/deps.sh PACKAGE...   (redis-server, postgresql, docker-compose, prometheus, nginx, chromium)
# Idempotent and silent when everything is there; runs `apt-get update` once, only when something is
# missing. As root it calls apt-get directly, otherwise through sudo; without sudo it prints the exact
# command to run and fails.
set -euo pipefail

have_initdb() {
	command -v initdb >/dev/null 2>&1 && return 0
	local f
	for f in /usr/lib/postgresql/*/bin/initdb; do
		[[ -x $f ]] && return 0
	done
	return 1
}

present() {
	case $1 in
	redis-server) command -v redis-server >/dev/null 2>&1 ;;
	postgresql) have_initdb ;; # the server binaries: initdb and postgres
	docker-compose) command -v docker-compose >/dev/null 2>&1 ;;
	prometheus) command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 ;;
	nginx) command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] ;;
	chromium) [[ -x /usr/bin/chromium ]] ;; # Debian's, for the browser tests (web/)
	*)
		echo "deps.sh: unknown package $1 (know: redis-server, postgresql, docker-compose, prometheus, nginx, chromium)" >&2
		exit 2
		;;
	esac
}

missing=()
for pkg in "$@"; do
	present "$pkg" || missing+=("$pkg")
done

if ((${#missing[@]} > 0)); then
	cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
	if ! command -v apt-get >/dev/null 2>&1; then
		echo "deps.sh: missing ${missing[*]} and no apt-get here; install them with your package manager" >&2
		exit 1
	fi
	if ((EUID == 0)); then
		sudo=()
	elif command -v sudo >/dev/null 2>&1; then
		sudo=(sudo)
	else
		echo "deps.sh: missing ${missing[*]}; as root, run:" >&2
		echo "  $cmd" >&2
		exit 1
	fi
	echo "deps.sh: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	"${sudo[@]}" apt-get update -qq -o DPkg::Lock::Timeout=600
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 "${missing[@]}"
	for pkg in "${missing[@]}"; do
		if ! present "$pkg"; then
			echo "deps.sh: $pkg still missing after apt-get install" >&2
			exit 1
		fi
	done
fi

# PostgreSQL refuses to run as root, so as root the dev stack and the tests run it as the `postgres`
# user, which Debian's postgresql package creates; make sure it exists when the binaries came otherwise.
if ((EUID == 0)) && [[ " $* " == *" postgresql "* ]] && ! id postgres >/dev/null 2>&1; then
	echo "deps.sh: creating the system user postgres (PostgreSQL refuses to run as root)" >&2
	useradd --system --user-group --home-dir /var/lib/postgresql --shell /usr/sbin/nologin postgres
fi
