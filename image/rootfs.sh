#!/bin/sh
# Assembles the image's root filesystem in ROOT from the build stage: the interpreter the
# virtual environment VENV points at, its standard library without the parts nothing here
# imports, the shared libraries the interpreter and every extension module in VENV load (found
# with ldd, so the base image decides nothing by name), CA certificates, time zones, and a
# passwd naming uid 10001. No shell, no package manager, no docs or locales: the runner is the
# only program. VENV itself is not copied (the Dockerfile copies it as a layer of its own).
#
#   sh rootfs.sh ROOT VENV
#
# Works on any Debian-based python image (Debian's python3 under /usr, or python.org's build
# under /usr/local with its libpython.so): paths come from the interpreter, not from this file.
set -eu
root=$1
venv=$2

# Copies PATH to the same place under ROOT: symlinks as symlinks (copy_content: what they
# point at, under the link's name).
copy() {
  mkdir -p "$root$(dirname "$1")"
  cp -a "$1" "$root$1"
}
copy_content() {
  mkdir -p "$root$(dirname "$1")"
  cp -a -L "$1" "$root$1"
}

# merged /usr: /bin, /lib, /lib64 are symlinks into /usr (the ELF interpreter is /lib64/...)
mkdir -p "$root"
for top in bin sbin lib lib64; do
  if [ -L "/$top" ]; then
    cp -a "/$top" "$root/"
    mkdir -p "$root/$(readlink "/$top")"
  fi
done

# the interpreter: the venv's python -> ... -> the real binary, each link kept
link=$venv/bin/python
while [ -L "$link" ]; do
  target=$(readlink "$link")
  case $target in /*) ;; *) target=$(dirname "$link")/$target ;; esac
  case $link in "$venv"/*) ;; *) copy "$link" ;; esac
  link=$target
done
copy "$link"
python=$link

# the standard library, compiled (python.org's images ship it without bytecode; the root
# filesystem is read-only, so whatever is not compiled here is compiled again on every run);
# not the base's own site-packages (python.org's holds pip and setuptools: the venv is the
# only place packages come from)
stdlib=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
copy "$stdlib"
lib=$root$stdlib
rm -rf "$lib"/ensurepip "$lib"/idlelib "$lib"/lib2to3 "$lib"/pydoc_data "$lib"/tkinter \
  "$lib"/turtledemo "$lib"/turtle.py "$lib"/test "$lib"/distutils "$lib"/venv \
  "$lib"/sqlite3 "$lib"/curses "$lib"/dbm "$lib"/config-* "$lib"/__phello__ \
  "$lib"/EXTERNALLY-MANAGED "$lib"/site-packages "$lib"/dist-packages
for module in _test _xx xx _ctypes_test _curses readline _dbm _gdbm nis ossaudiodev \
    _sqlite3 _tkinter _crypt audioop; do
  rm -f "$lib"/lib-dynload/"$module"*.so
done
find "$lib" -depth -type d \( -name test -o -name tests -o -name idle_test \) \
  -exec rm -rf {} +
find "$lib" -name '*.opt-?.pyc' -delete
"$python" -m compileall -q -j 0 -s "$root" -p / "$lib" >/dev/null  # as if compiled in place

# the shared libraries: what ldd finds for the interpreter and every ELF file kept; and
# libgcc_s, which glibc loads by name when a thread is cancelled or exits
# (pthread_exit: Python's daemon threads at shutdown)
{
  find "$root" "$venv" -type f \( -name '*.so' -o -name '*.so.*' -o -perm -u+x \) \
    -exec ldd {} \; 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'
  ldconfig -p | awk '$1 == "libgcc_s.so.1" { print $NF; exit }'
} | sort -u | while read -r library; do
  case $library in "$venv"/*) continue ;; esac
  copy_content "$library"
done
# the loader's cache, for libraries outside its built-in paths (/usr/local/lib)
copy /etc/ld.so.conf
if [ -d /etc/ld.so.conf.d ]; then copy /etc/ld.so.conf.d; fi
ldconfig -r "$root"

# CA certificates (Python's ssl, boto3), OpenSSL's configuration, time zones (psycopg reads
# timestamptz values in the server's TimeZone; not the leap-second "right/" ones)
copy_content /etc/ssl/certs/ca-certificates.crt
if [ -e /etc/ssl/openssl.cnf ]; then copy_content /etc/ssl/openssl.cnf; fi
if [ -d /usr/lib/ssl ]; then copy /usr/lib/ssl; rm -rf "$root"/usr/lib/ssl/misc; fi
if [ -d /usr/share/zoneinfo ]; then copy /usr/share/zoneinfo; rm -rf "$root"/usr/share/zoneinfo/right; fi

# who uid 10001 is, how names are resolved, and a /tmp (a tmpfs is mounted on it or not)
mkdir -p "$root"/etc "$root"/tmp
chmod 1777 "$root"/tmp
printf '%s\n' 'root:x:0:0:root:/root:/usr/sbin/nologin' \
  'runner:x:10001:10001:runner:/app:/usr/sbin/nologin' >"$root"/etc/passwd
printf '%s\n' 'root:x:0:' 'runner:x:10001:' >"$root"/etc/group
printf '%s\n' 'passwd: files' 'group: files' 'hosts: files dns' >"$root"/etc/nsswitch.conf
