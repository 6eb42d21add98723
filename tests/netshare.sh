#!/usr/bin/env bash
# A real shared-filesystem test bed: one export directory mounted twice over sshfs.
#
#   tests/netshare.sh up DIR     install what is missing, start sshd on 127.0.0.1,
#                                mount DIR/export at DIR/host-a and DIR/host-b
#   tests/netshare.sh down DIR   unmount both, stop that sshd, remove its keys
#
# Everything lives in DIR (a throw-away directory): the host key, the client key, the
# sshd config (root login by key allowed only there), the pid file and the log. The
# system's /etc/ssh is not touched. "up" prints "OK <port>" on success; on a machine
# where the bed cannot be had it exits 77 with "SKIP <reason>" (the pytest fixture
# turns that into a skip that shows the reason).
set -u

skip() { echo "SKIP $*"; exit 77; }
die() { echo "FAIL $*"; exit 1; }

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || die "usage: $0 up|down DIR"
dir=$(cd "$dir" 2>/dev/null && pwd) || die "no such directory: $2"

down() {
    for m in "$dir/host-a" "$dir/host-b"; do
        if grep -qs " $m fuse" /proc/self/mounts; then
            fusermount -u "$m" 2>/dev/null || fusermount -uz "$m" 2>/dev/null || umount -l "$m"
        fi
    done
    if [ -s "$dir/sshd.pid" ]; then
        kill "$(cat "$dir/sshd.pid")" 2>/dev/null || true
        rm -f "$dir/sshd.pid"
    fi
    rm -f "$dir/host_key" "$dir/host_key.pub" "$dir/client_key" "$dir/client_key.pub"
}

if [ "$cmd" = down ]; then
    down
    exit 0
fi
[ "$cmd" = up ] || die "unknown command: $cmd"

# -- what the bed needs ------------------------------------------------------------------
[ -e /dev/fuse ] || skip "FUSE is unavailable here: /dev/fuse does not exist"
grep -qw fuse /proc/filesystems || skip "FUSE is unavailable here: the kernel has no fuse filesystem"
if ! command -v sshfs >/dev/null || ! [ -x /usr/sbin/sshd ] || ! command -v fusermount >/dev/null; then
    command -v apt-get >/dev/null || skip "sshfs/openssh-server are missing and there is no apt-get"
    [ "$(id -u)" = 0 ] || skip "sshfs/openssh-server are missing and installing them needs root"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >"$dir/apt.log" 2>&1 || skip "apt-get update failed (see $dir/apt.log)"
    apt-get install -y -qq --no-install-recommends openssh-server openssh-client sshfs fuse3 \
        >>"$dir/apt.log" 2>&1 || skip "apt-get install openssh-server sshfs failed (see $dir/apt.log)"
fi
[ "$(id -u)" = 0 ] || skip "the test bed logs in as root over ssh; run the tests as root"

# -- sshd on a free loopback port, with throw-away keys ---------------------------------
mkdir -p "$dir/export" "$dir/host-a" "$dir/host-b" /run/sshd
rm -f "$dir/host_key" "$dir/client_key" "$dir/host_key.pub" "$dir/client_key.pub"
ssh-keygen -q -t ed25519 -N '' -f "$dir/host_key" || die "ssh-keygen failed"
ssh-keygen -q -t ed25519 -N '' -f "$dir/client_key" || die "ssh-keygen failed"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$dir/sshd_config" <<EOF
Port $port
ListenAddress 127.0.0.1
HostKey $dir/host_key
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/client_key.pub
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding no
X11Forwarding no
Subsystem sftp internal-sftp
EOF
/usr/sbin/sshd -f "$dir/sshd_config" -E "$dir/sshd.log" || die "sshd did not start (see $dir/sshd.log)"
for _ in $(seq 50); do [ -s "$dir/sshd.pid" ] && break; sleep 0.1; done

# -- two mounts of one export: "host A" and "host B" -------------------------------------
# Caching like an NFS client's: names may be cached for a second (entry_timeout, like
# NFS's lookup cache), but opening a file sees its current size and content, as NFS's
# close-to-open consistency guarantees. sshfs is path based and does not revalidate on
# open; with FUSE's default attr_timeout=1 a reader could see another host's freshly
# replaced file cut at the old file's size. dir_cache=no: sshfs's own 20 s directory
# cache would hide other hosts' new files far longer than NFS does.
opts="port=$port,IdentityFile=$dir/client_key,StrictHostKeyChecking=no"
opts="$opts,UserKnownHostsFile=/dev/null,BatchMode=yes,LogLevel=ERROR"
opts="$opts,dir_cache=no,entry_timeout=1,attr_timeout=0"
for m in host-a host-b; do
    if ! sshfs -o "$opts" "root@127.0.0.1:$dir/export" "$dir/$m" 2>"$dir/sshfs-$m.log"; then
        reason=$(head -c 300 "$dir/sshfs-$m.log")
        down
        case "$reason" in
            *"/dev/fuse"*|*"fuse device"*|*"Operation not permitted"*|*"fusermount"*)
                skip "cannot mount FUSE here: $reason" ;;
        esac
        die "sshfs mount of $m failed: $reason"
    fi
done
echo "OK $port"
