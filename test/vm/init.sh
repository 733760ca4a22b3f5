#!/bin/busybox sh
# PID 1 of the test VM (busybox, from the initramfs). Loads the modules in the order the host computed, mounts
# the host's root read-only over 9p, gives it writable tmpfs on /run and /tmp (iptables-legacy's lock, ip netns),
# mounts the results share at /run/results and runs the host-written /run/results/run.sh in a chroot. Whatever
# happens, it powers the VM off so qemu exits.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev

say() { echo "cipha-vm: $*" > /dev/ttyS0; }

# The guest bounds itself too (cipha.timeout= seconds on the kernel command line), so qemu ends even if the
# host test that should kill it died first.
for arg in $(cat /proc/cmdline); do
  case "$arg" in cipha.timeout=*) (sleep "${arg#cipha.timeout=}"; say "watchdog: powering off"; poweroff -f) & ;; esac
done

for m in $(cat /modules/order); do
  insmod "/modules/$m.ko" || say "insmod $m failed"
done

P9='trans=virtio,version=9p2000.L,msize=262144'
mkdir -p /host
if mount -t 9p -o "$P9,cache=loose,ro" hostroot /host; then
  mount -t proc proc /host/proc
  mount -t sysfs sys /host/sys
  mount -t devtmpfs dev /host/dev
  mount -t tmpfs -o mode=0755 tmpfs /host/run
  mount -t tmpfs -o mode=1777 tmpfs /host/tmp
  # The checkout again at its own path: the tmpfs above hides it when it lives under /tmp.
  for arg in $(cat /proc/cmdline); do
    case "$arg" in
      cipha.repo=*)
        repo="${arg#cipha.repo=}"
        mkdir -p "/host$repo" 2>/dev/null
        mount -t 9p -o "$P9,cache=loose,ro" repo "/host$repo" || say "cannot mount the repo share at $repo"
        ;;
    esac
  done
  mkdir -p /host/run/results
  if mount -t 9p -o "$P9" results /host/run/results; then
    say "guest start $(cut -d' ' -f1 /proc/uptime)"
    chroot /host /bin/sh /run/results/run.sh > /host/run/results/guest.log 2>&1
    echo $? > /host/run/results/guest.rc
    say "guest exit $(cat /host/run/results/guest.rc) $(cut -d' ' -f1 /proc/uptime)"
    sync
    umount /host/run/results
  else
    say "cannot mount the results share"
  fi
else
  say "cannot mount the host root share"
fi
poweroff -f
