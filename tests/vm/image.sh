#!/bin/sh
# The recipe of the test VM's disk image: Debian bookworm from Debian's packages, systemd as
# init, and a venv with the test suite's Python packages (from a wheelhouse the host filled).
# run.py rebuilds the image whenever this file or the wheelhouse's requirements change.
# Usage: image.sh IMAGE WHEELHOUSE REQUIREMENTS
set -eu
image=$1 wheels=$2 requirements=$3
work=$(mktemp -d "${image}.build.XXXXXX")
root=$work/root
cleanup() {
    for m in proc dev/pts dev sys wheels; do umount "$root/$m" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# What jobd and its tests need on a host: python3 with venv, systemd, libseccomp, util-linux's
# unshare, the tools the tests run inside jobs (perl, make, git, tar), gcc for the tests that
# build launchers and probes, and openssl for ca/gen.sh.
debootstrap --variant=minbase \
    --include=python3,python3-venv,systemd,systemd-sysv,dbus,libseccomp2,util-linux,procps,iproute2,perl,make,git,tar,openssl,gcc,libc6-dev \
    bookworm "$root" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log"; exit 1; }

mkdir -p "$root/wheels"
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
mount --bind "$wheels" "$root/wheels"
chroot "$root" python3 -m venv /opt/jobd-test
chroot "$root" /opt/jobd-test/bin/pip install -q --no-index --find-links /wheels \
    -r "/wheels/$(basename "$requirements")"
umount "$root/wheels" "$root/dev" "$root/proc"
rmdir "$root/wheels"

# Boot straight to the test unit: no gettys, timers, module loading or generators it does not
# need (each costs seconds under User-Mode Linux).
for unit in getty@tty1.service serial-getty@.service console-getty.service \
        apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
        e2scrub_reap.service fstrim.timer systemd-tmpfiles-clean.timer \
        systemd-modules-load.service kmod-static-nodes.service systemd-pstore.service \
        systemd-random-seed.service systemd-timesyncd.service systemd-update-utmp.service \
        systemd-journal-flush.service systemd-hwdb-update.service systemd-logind.service \
        systemd-remount-fs.service; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
for gen in systemd-cryptsetup-generator systemd-gpt-auto-generator \
        systemd-hibernate-resume-generator systemd-integritysetup-generator \
        systemd-veritysetup-generator systemd-sysv-generator systemd-getty-generator; do
    rm -f "$root/lib/systemd/system-generators/$gen"
done
echo jobd-vm >"$root/etc/hostname"
printf '/dev/ubda / ext4 rw 0 1\n' >"$root/etc/fstab"
# The unit that runs the host's guest.sh (from the shared checkout) and powers off.
cat >"$root/etc/systemd/system/jobd-vm.service" <<'UNIT'
[Unit]
Description=jobd VM test run
After=dbus.service
[Service]
Type=oneshot
StandardOutput=journal+console
StandardError=inherit
ExecStart=/bin/sh /usr/local/sbin/jobd-vm-run
UNIT
cat >"$root/usr/local/sbin/jobd-vm-run" <<'RUN'
#!/bin/sh
# Mount the host folders named on the kernel command line, run the checkout's guest.sh, and
# power off whatever it says; the host reads the verdict from the shared out folder.
for arg in $(cat /proc/cmdline); do
    case $arg in
        jobdvm.src=*) src=${arg#jobdvm.src=} ;;
        jobdvm.out=*) out=${arg#jobdvm.out=} ;;
    esac
done
mkdir -p /vm/src /vm/out
mount -t hostfs -o ro,"$src" none /vm/src
mount -t hostfs -o "$out" none /vm/out
/bin/sh /vm/src/tests/vm/guest.sh >/vm/out/guest.log 2>&1
echo $? >/vm/out/guest.rc
sync
systemctl --no-block poweroff --force
RUN
chmod 755 "$root/usr/local/sbin/jobd-vm-run"
mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
ln -sf /etc/systemd/system/jobd-vm.service "$root/etc/systemd/system/multi-user.target.wants/"
systemctl --root="$root" set-default multi-user.target >/dev/null 2>&1

# Sparse: 4 GiB of room, ~0.7 GiB written; each boot writes to its own copy-on-write file.
mkfs.ext4 -q -F -d "$root" -L jobd-vm "$work/image.ext4" 4G
mv "$work/image.ext4" "$image"
