/*
 * jobd-launch: every job's first process. The daemon spawns it (vfork, so nothing of the
 * daemon runs in the child) with the job's exact environment, and it turns itself into the
 * job, step by step, as root until the last moment:
 *
 *   1. joins the job's cgroups (-c), so the job is contained from its first instruction;
 *   2. sets its OOM score (-o), so the kernel's OOM killer takes a job before the daemon;
 *   3. makes the job's namespaces (-n). With a PID namespace it forks: this process stays
 *      outside as the daemon's child, forwards the daemon's signals to its one child, and ends
 *      exactly as the job's command ended; the child is PID 1 of the namespace, a small init
 *      that forwards every signal it gets to the command's process group, reaps orphans, and
 *      exits once the command has exited (see outer() and init());
 *   4. sets up the mounts (-R read-only root, -w writable paths, -t private tmpfs, -D a
 *      minimal /dev, -P /proc, -S /sys), the host name (-h) and loopback (-L);
 *   5. drops to the job's account (-u -g -G): no capabilities, no_new_privs;
 *   6. changes into the working directory (-d), as that account, after the mounts: the
 *      kernel decides what the account may enter, with no window between check and use;
 *   7. installs the syscall filter it reads from a descriptor (-f);
 *   8. finds the program on the search path (-p) and execs it, as execvp would, except that
 *      a file in no executable format is an error rather than a shell script.
 *
 * Any failure before the exec is written to the status descriptor (-s, close-on-exec) as one
 * line, "STEP<TAB>ERRNO<TAB>DETAIL", and ends the process with 125 (setup), 126 (cannot
 * execute) or 127 (not found). The daemon reads that descriptor until it closes: nothing means
 * the command's exec succeeded. No path is ever looked at by the daemon itself.
 *
 * On x86_64 it is built freestanding, with no libc: there is no dynamic loader to map and
 * relocate and no libc start-up (in a VM, glibc's start-up traps to the hypervisor on every
 * CPUID). Elsewhere it is built against libc (-DJOBD_LIBC) and uses only its syscall().
 *
 *   jobd-launch -s FD [-c PROCS]... [-o ADJ] [-n FLAGS] [-h NAME] [-L] [-R] [-w PATH]...
 *               [-t DIR]... [-z BYTES] [-D] [-P] [-S] [-u UID -g GID [-G G,G,...]] [-d DIR]
 *               [-p PATH] [-f FD] -- ARGV0 [ARG...]
 */

#ifdef JOBD_LIBC
#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>
#define NR(name) SYS_##name
static long sys6(long n, long a, long b, long c, long d, long e, long f) {
    long r = syscall(n, a, b, c, d, e, f);
    return r == -1 ? -errno : r;
}
#else
#if !defined(__x86_64__) || !defined(__linux__)
#error "the freestanding jobd-launch is for x86_64 Linux; build with -DJOBD_LIBC elsewhere"
#endif
#define NR(name) NR_##name
#define NR_read 0
#define NR_write 1
#define NR_close 3
#define NR_rt_sigaction 13
#define NR_rt_sigprocmask 14
#define NR_ioctl 16
#define NR_pread64 17
#define NR_getpid 39
#define NR_socket 41
#define NR_clone 56
#define NR_execve 59
#define NR_wait4 61
#define NR_kill 62
#define NR_fcntl 72
#define NR_chdir 80
#define NR_umask 95
#define NR_setsid 112
#define NR_setgroups 116
#define NR_setresuid 117
#define NR_setresgid 119
#define NR_capset 126
#define NR_prctl 157
#define NR_mount 165
#define NR_sethostname 170
#define NR_exit_group 231
#define NR_openat 257
#define NR_mkdirat 258
#define NR_mknodat 259
#define NR_symlinkat 266
#define NR_unshare 272
#define NR_signalfd4 289
#define NR_pipe2 293
#define NR_prlimit64 302
#define NR_seccomp 317
#define NR_statx 332
#define NR_mount_setattr 442

static long sys6(long n, long a, long b, long c, long d, long e, long f) {
    long result;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall"
                     : "=a"(result)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return result;
}

/* The compiler may emit calls to these for struct copies and zeroing. */
void *memset(void *s, int c, unsigned long n) {
    volatile unsigned char *p = s;
    while (n--) *p++ = (unsigned char)c;
    return s;
}
void *memcpy(void *d, const void *s, unsigned long n) {
    volatile unsigned char *o = d;
    const unsigned char *i = s;
    while (n--) *o++ = *i++;
    return d;
}
#endif

#define sys0(n) sys6(NR(n), 0, 0, 0, 0, 0, 0)
#define sys1(n, a) sys6(NR(n), (long)(a), 0, 0, 0, 0, 0)
#define sys2(n, a, b) sys6(NR(n), (long)(a), (long)(b), 0, 0, 0, 0)
#define sys3(n, a, b, c) sys6(NR(n), (long)(a), (long)(b), (long)(c), 0, 0, 0)
#define sys4(n, a, b, c, d) sys6(NR(n), (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)
#define sys5(n, a, b, c, d, e) \
    sys6(NR(n), (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), 0)

/* The kernel's ABI, the same on every architecture jobd knows. */
#define AT_FDCWD (-100)
#define AT_RECURSIVE 0x8000
#define O_WRONLY 01
#define O_CLOEXEC 02000000
#define F_SETFD 2
#define FD_CLOEXEC 1
#define SIG_BLOCK 0
#define SIG_SETMASK 2
#define SIGCHLD 17
#define SIGKILL 9
#define SIGSTOP 19
#define SFD_CLOEXEC 02000000
#define WNOHANG 1
#define WALL 0x40000000
#define CLONE_NEWNS 0x00020000
#define CLONE_NEWUTS 0x04000000
#define CLONE_NEWIPC 0x08000000
#define CLONE_NEWPID 0x20000000
#define CLONE_NEWNET 0x40000000
#define MS_RDONLY 1
#define MS_NOSUID 2
#define MS_NODEV 4
#define MS_NOEXEC 8
#define MS_BIND 4096
#define MS_REC 16384
#define MS_PRIVATE (1 << 18)
#define MOUNT_ATTR_RDONLY 1
#define S_IFCHR 0020000
#define PR_SET_PDEATHSIG 1
#define PR_CAPBSET_DROP 24
#define PR_SET_NO_NEW_PRIVS 38
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#define CAPS_V3 0x20080522
#define RLIMIT_CORE 4
#define AF_INET 2
#define SOCK_DGRAM 2
#define SIOCGIFFLAGS 0x8913
#define SIOCSIFFLAGS 0x8914
#define IFF_UP 0x1
#define IFF_RUNNING 0x40
#define SECCOMP_SET_MODE_FILTER 1
#define EINTR 4
#define ENOENT 2
#define EIO 5
#define E2BIG 7
#define EACCES 13
#define ENOTDIR 20
#define EISDIR 21
#define EINVAL 22
#define ENAMETOOLONG 36
#define ELOOP 40
#define ESTALE 116

#define MAX_LIST 64
#define MAX_GROUPS 256
#define MAX_FILTER 4096 /* BPF instructions, the kernel's own maximum */

struct plan {
    int status_fd;
    const char *procs[MAX_LIST];
    int nprocs;
    const char *oom_adj;
    long ns;
    const char *hostname;
    int lo, read_only, dev, proc, sys;
    const char *writable[MAX_LIST];
    int nwritable;
    const char *tmpfs[MAX_LIST];
    int ntmpfs;
    const char *tmpfs_size;
    int drop;
    long uid, gid;
    unsigned int groups[MAX_GROUPS];
    int ngroups;
    const char *cwd;
    const char *path;
    int filter_fd;
    char **argv;
    char **envp;
};

/* ---- small helpers ------------------------------------------------------------------ */

__attribute__((noreturn)) static void leave(int code) {
    for (;;) sys1(exit_group, code);
}

static unsigned long length(const char *s) {
    unsigned long n = 0;
    while (s[n]) n++;
    return n;
}

static int same(const char *a, const char *b) {
    while (*a && *a == *b) a++, b++;
    return *a == *b;
}

static int ends_with(const char *s, const char *tail) {
    unsigned long n = length(s), k = length(tail);
    return n >= k && same(s + n - k, tail);
}

/* Appends src to buf (capacity cap, always NUL-terminated); returns the new length. */
static unsigned long append(char *buf, unsigned long at, unsigned long cap, const char *src) {
    while (*src && at + 1 < cap) buf[at++] = *src++;
    buf[at] = 0;
    return at;
}

static unsigned long decimal(char *buf, unsigned long value) {
    char digits[24];
    unsigned long n = 0, i = 0;
    do digits[n++] = (char)('0' + value % 10), value /= 10; while (value);
    while (n) buf[i++] = digits[--n];
    buf[i] = 0;
    return i;
}

/* A non-negative decimal number, or -1 if text is not one. */
static long number(const char *text) {
    long value = 0;
    if (!*text) return -1;
    for (; *text; text++) {
        if (*text < '0' || *text > '9' || value > 0x7fffffffL) return -1;
        value = value * 10 + (*text - '0');
    }
    return value;
}

static void write_all(int fd, const char *buf, unsigned long n) {
    while (n) {
        long w = sys3(write, fd, buf, n);
        if (w == -EINTR) continue;
        if (w <= 0) return;
        buf += w, n -= (unsigned long)w;
    }
}

/* ---- failure reports ---------------------------------------------------------------- */

static int status_fd = -1;

/* "STEP<TAB>ERRNO<TAB>DETAIL\n" on the status descriptor (one write, so the daemon reads it
 * whole), or a sentence on stderr when there is none; then exit with code. */
__attribute__((noreturn)) static void fail(int code, const char *step, long err,
                                           const char *detail) {
    char line[4096], digits[24];
    if (err < 0) err = -err;
    decimal(digits, (unsigned long)err);
    const char *piped[] = {step, "\t", digits, "\t", detail ? detail : "", 0};
    const char *said[] = {"jobd-launch: ", step, " failed (errno ", digits, "): ",
                          detail ? detail : "", 0};
    const char **parts = status_fd >= 0 ? piped : said;
    unsigned long n = 0;
    for (int i = 0; parts[i]; i++) n = append(line, n, sizeof line - 1, parts[i]);
    line[n++] = '\n';
    write_all(status_fd >= 0 ? status_fd : 2, line, n);
    leave(code);
}

#define CHECK(call, step, detail)                           \
    do {                                                    \
        long result_ = (call);                              \
        if (result_ < 0) fail(125, step, result_, detail);  \
    } while (0)

/* ---- the command line --------------------------------------------------------------- */

static void add(const char **list, int *count, const char *value) {
    if (*count >= MAX_LIST) fail(125, "usage", E2BIG, value);
    list[(*count)++] = value;
}

static long wanted_number(const char *text) {
    long value = number(text);
    if (value < 0) fail(125, "usage", EINVAL, text);
    return value;
}

static void parse_groups(struct plan *p, const char *text) {
    long value = 0;
    int digits = 0;
    for (;; text++) {
        if (*text >= '0' && *text <= '9' && value <= 0x7fffffffL) {
            value = value * 10 + (*text - '0'), digits++;
            continue;
        }
        if ((*text != ',' && *text) || !digits || p->ngroups >= MAX_GROUPS)
            fail(125, "usage", EINVAL, "-G");
        p->groups[p->ngroups++] = (unsigned int)value;
        if (!*text) return;
        value = 0, digits = 0;
    }
}

static void parse(struct plan *p, int argc, char **argv) {
    int i = 1;
    for (; i < argc && !same(argv[i], "--"); i++) {
        const char *o = argv[i];
        if (o[0] != '-' || !o[1] || o[2]) fail(125, "usage", EINVAL, o);
        char c = o[1];
        if (c == 'L') { p->lo = 1; continue; }
        if (c == 'R') { p->read_only = 1; continue; }
        if (c == 'D') { p->dev = 1; continue; }
        if (c == 'P') { p->proc = 1; continue; }
        if (c == 'S') { p->sys = 1; continue; }
        if (i + 1 >= argc) fail(125, "usage", EINVAL, o);
        const char *v = argv[++i];
        switch (c) {
        case 's': status_fd = p->status_fd = (int)wanted_number(v); break;
        case 'c':
            /* Only ever a cgroup.procs file: a wrong command line can never make this root
             * program write a pid into some other file. */
            if (!ends_with(v, "/cgroup.procs")) fail(125, "usage", EINVAL, v);
            add(p->procs, &p->nprocs, v);
            break;
        case 'o': p->oom_adj = v; break;
        case 'n': p->ns = wanted_number(v); break;
        case 'h': p->hostname = v; break;
        case 'w': add(p->writable, &p->nwritable, v); break;
        case 't': add(p->tmpfs, &p->ntmpfs, v); break;
        case 'z': wanted_number(v), p->tmpfs_size = v; break;
        case 'u': p->uid = wanted_number(v), p->drop = 1; break;
        case 'g': p->gid = wanted_number(v), p->drop = 1; break;
        case 'G': parse_groups(p, v); break;
        case 'd': p->cwd = v; break;
        case 'p': p->path = v; break;
        case 'f': p->filter_fd = (int)wanted_number(v); break;
        default: fail(125, "usage", EINVAL, o);
        }
    }
    if (i + 1 >= argc) fail(125, "usage", EINVAL, "-- ARGV0 [ARG...]");
    if (p->drop && (p->uid < 0 || p->gid < 0)) fail(125, "usage", EINVAL, "-u and -g");
    p->argv = argv + i + 1;
}

/* ---- signals ------------------------------------------------------------------------ */

/* What the outer process and the init pass on: every catchable signal but SIGCHLD and the
 * ones the kernel raises for a fault of the receiver itself (as tini). */
static unsigned long forwarded(void) {
    static const int skip[] = {4, 5, 6, 7, 8, 9, 11, 17, 19, 31, 32, 33};
    unsigned long set = ~0UL;
    for (unsigned long i = 0; i < sizeof skip / sizeof skip[0]; i++)
        set &= ~(1UL << (skip[i] - 1));
    return set;
}

struct sigaction_k {
    long handler;
    unsigned long flags;
    long restorer;
    unsigned long mask;
};

struct rlimit_k {
    unsigned long cur, max;
};

/* Ends this process the way status (a wait status) says its job ended: the same exit code,
 * or killed by the same signal (with core dumps off: the job dumped already if it was to). */
__attribute__((noreturn)) static void end_like(int status) {
    int sig = status & 0x7f;
    if (!sig) leave((status >> 8) & 0xff);
    struct rlimit_k none = {0, 0};
    struct sigaction_k dfl = {0, 0, 0, 0};
    unsigned long set = 1UL << (sig - 1);
    sys4(prlimit64, 0, RLIMIT_CORE, &none, 0);
    sys4(rt_sigaction, sig, &dfl, 0, 8);
    sys4(rt_sigprocmask, 1 /* SIG_UNBLOCK */, &set, 0, 8);
    sys2(kill, sys0(getpid), sig);
    leave(128 + sig);
}

struct siginfo_fd {
    unsigned int signo;
    char rest[124];
};

static int next_signal(int fd) {
    struct siginfo_fd info;
    for (;;) {
        long n = sys3(read, fd, &info, sizeof info);
        if (n == (long)sizeof info) return (int)info.signo;
        if (n != -EINTR) leave(125); /* cannot happen with a valid signalfd */
    }
}

/* ---- mounts ------------------------------------------------------------------------- */

struct mount_attr_k {
    unsigned long long attr_set, attr_clr, propagation, userns_fd;
};

static long set_attr(const char *path, unsigned int flags, unsigned long long set,
                     unsigned long long clear) {
    struct mount_attr_k attr = {set, clear, 0, 0};
    return sys5(mount_setattr, AT_FDCWD, path, flags, &attr, sizeof attr);
}

/* An empty tmpfs on where, of the job's size: its pages are charged to the job's memory. */
static long tmpfs(const struct plan *p, const char *where) {
    char options[96];
    unsigned long n = append(options, 0, sizeof options, "mode=1777");
    if (p->tmpfs_size) {
        n = append(options, n, sizeof options, ",size=");
        append(options, n, sizeof options, p->tmpfs_size);
    }
    return sys5(mount, "jobd-tmp", where, "tmpfs", MS_NOSUID | MS_NODEV, options);
}

static void node(const char *path, unsigned int major, unsigned int minor) {
    unsigned long dev = (major << 8) | minor;
    CHECK(sys4(mknodat, AT_FDCWD, path, S_IFCHR | 0666, dev), "mount", path);
}

static void link_to(const char *target, const char *path) {
    CHECK(sys3(symlinkat, target, AT_FDCWD, path), "mount", path);
}

/* A /dev of its own: the harmless devices, private ptys, private shared memory, and (with an
 * IPC namespace) the namespace's own POSIX message queues; read-only itself. */
static void minimal_dev(const struct plan *p) {
    CHECK(sys5(mount, "jobd-dev", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=64k"),
          "mount", "/dev");
    long old = sys1(umask, 0);
    node("/dev/null", 1, 3);
    node("/dev/zero", 1, 5);
    node("/dev/full", 1, 7);
    node("/dev/random", 1, 8);
    node("/dev/urandom", 1, 9);
    node("/dev/tty", 5, 0);
    CHECK(sys3(mkdirat, AT_FDCWD, "/dev/pts", 0755), "mount", "/dev/pts");
    CHECK(sys5(mount, "devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
               "newinstance,ptmxmode=0666,mode=0620"), "mount", "/dev/pts");
    link_to("pts/ptmx", "/dev/ptmx");
    CHECK(sys3(mkdirat, AT_FDCWD, "/dev/shm", 01777), "mount", "/dev/shm");
    CHECK(tmpfs(p, "/dev/shm"), "mount", "/dev/shm");
    if (p->ns & CLONE_NEWIPC) {
        CHECK(sys3(mkdirat, AT_FDCWD, "/dev/mqueue", 01777), "mount", "/dev/mqueue");
        CHECK(sys5(mount, "mqueue", "/dev/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                   0), "mount", "/dev/mqueue");
    }
    link_to("/proc/self/fd", "/dev/fd");
    link_to("/proc/self/fd/0", "/dev/stdin");
    link_to("/proc/self/fd/1", "/dev/stdout");
    link_to("/proc/self/fd/2", "/dev/stderr");
    sys1(umask, old);
    CHECK(set_attr("/dev", 0, MOUNT_ATTR_RDONLY, 0), "mount", "/dev");
}

static void mounts(const struct plan *p) {
    /* Nothing done here reaches the host, and nothing the host mounts later reaches in. */
    CHECK(sys5(mount, 0, "/", 0, MS_REC | MS_PRIVATE, 0), "mount", "/");
    if (p->read_only) {
        CHECK(set_attr("/", AT_RECURSIVE, MOUNT_ATTR_RDONLY, 0), "mount", "/");
        for (int i = 0; i < p->nwritable; i++) {
            const char *w = p->writable[i];
            CHECK(sys5(mount, w, w, 0, MS_BIND | MS_REC, 0), "writable", w);
            CHECK(set_attr(w, 0, 0, MOUNT_ATTR_RDONLY), "writable", w);
        }
    }
    for (int i = 0; i < p->ntmpfs; i++) {
        if (p->dev && same(p->tmpfs[i], "/dev/shm")) continue; /* minimal_dev has its own */
        long r = tmpfs(p, p->tmpfs[i]);
        /* Gone since the daemon looked: then it is no place to share either. */
        if (r < 0 && r != -ENOENT) fail(125, "mount", r, p->tmpfs[i]);
    }
    if (p->dev) minimal_dev(p);
    if (p->proc)
        CHECK(sys5(mount, "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, 0),
              "mount", "/proc");
    if (p->sys)
        CHECK(sys5(mount, "sysfs", "/sys", "sysfs",
                   MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, 0), "mount", "/sys");
}

struct ifreq_k {
    char name[16];
    short flags;
    char pad[22];
};

static void loopback_up(void) {
    struct ifreq_k req = {{'l', 'o', 0}, 0, {0}};
    long fd = sys3(socket, AF_INET, SOCK_DGRAM | O_CLOEXEC, 0);
    CHECK(fd, "loopback", "lo");
    CHECK(sys3(ioctl, fd, SIOCGIFFLAGS, &req), "loopback", "lo");
    req.flags |= IFF_UP | IFF_RUNNING;
    CHECK(sys3(ioctl, fd, SIOCSIFFLAGS, &req), "loopback", "lo");
    sys1(close, fd);
}

/* Everything that is the same for the whole job: done once, by its first process inside. */
static void set_up(const struct plan *p) {
    if (p->ns & CLONE_NEWNS) mounts(p);
    if (p->lo) loopback_up();
    if (p->hostname) CHECK(sys2(sethostname, p->hostname, length(p->hostname)), "hostname",
                           p->hostname);
}

/* ---- becoming the command ----------------------------------------------------------- */

struct cap_header {
    unsigned int version;
    int pid;
};
struct cap_data {
    unsigned int effective, permitted, inheritable;
};

static void drop_privileges(const struct plan *p) {
    /* The bounding set while we still have CAP_SETPCAP; then ids, which empty the effective
     * and permitted sets; then the inheritable set; no_new_privs keeps set-user-id programs
     * and file capabilities from handing anything back. */
    sys5(prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    for (long cap = 0; cap < 64; cap++) {
        long r = sys5(prctl, PR_CAPBSET_DROP, cap, 0, 0, 0);
        if (r < 0 && r != -EINVAL) fail(125, "drop", r, "bounding set");
    }
    CHECK(sys2(setgroups, p->ngroups, p->groups), "drop", "groups");
    CHECK(sys3(setresgid, p->gid, p->gid, p->gid), "drop", "gid");
    CHECK(sys3(setresuid, p->uid, p->uid, p->uid), "drop", "uid");
    struct cap_header header = {CAPS_V3, 0};
    struct cap_data data[2] = {{0, 0, 0}, {0, 0, 0}};
    CHECK(sys2(capset, &header, data), "drop", "capabilities");
    CHECK(sys5(prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "drop", "no_new_privs");
}

struct sock_fprog_k {
    unsigned short len;
    void *filter;
};

/* The compiled BPF program, from a descriptor every launch shares: read at its own offsets
 * (pread), never moving a file position another launch reads from. */
static void install_filter(int fd) {
    static unsigned long long program[MAX_FILTER];
    unsigned long have = 0;
    for (;;) {
        long n = sys4(pread64, fd, (char *)program + have, sizeof program - have, have);
        if (n == -EINTR) continue;
        if (n < 0) fail(125, "seccomp", n, "reading the filter");
        if (n == 0) break;
        have += (unsigned long)n;
        if (have == sizeof program) fail(125, "seccomp", E2BIG, "filter too long");
    }
    sys1(close, fd);
    if (!have || have % 8) fail(125, "seccomp", EINVAL, "filter size");
    struct sock_fprog_k prog = {(unsigned short)(have / 8), program};
    CHECK(sys3(seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog), "seccomp", "install");
}

/* Whether path is a directory (execve says only EACCES for one). */
static int is_directory(const char *path) {
    static unsigned char stx[256]; /* struct statx; stx_mode is a u16 at offset 0x1c */
    if (sys5(statx, AT_FDCWD, path, 0, 0x2 /* STATX_MODE */, stx) < 0) return 0;
    unsigned int mode = stx[0x1c] | (stx[0x1d] << 8);
    return (mode & 0170000) == 0040000;
}

static int has_slash(const char *s) {
    for (; *s; s++)
        if (*s == '/') return 1;
    return 0;
}

/* execvp's search, without its fallback of running a file of no known format through
 * /bin/sh: the kernel's ENOEXEC is reported instead. */
__attribute__((noreturn)) static void exec_command(const struct plan *p) {
    const char *name = p->argv[0];
    if (has_slash(name)) {
        long err = sys3(execve, name, p->argv, p->envp);
        if (err == -EACCES && is_directory(name)) err = -EISDIR;
        fail(err == -ENOENT ? 127 : 126, "exec", err, name);
    }
    static char candidate[4096], denied[4096];
    const char *entry = p->path ? p->path : "";
    for (;;) {
        const char *end = entry;
        while (*end && *end != ':') end++;
        unsigned long n = (unsigned long)(end - entry);
        if (n + 1 + length(name) < sizeof candidate) {
            for (unsigned long i = 0; i < n; i++) candidate[i] = entry[i];
            if (n) candidate[n++] = '/';
            append(candidate, n, sizeof candidate, name);
            long err = sys3(execve, candidate, p->argv, p->envp);
            switch (-err) {
            case EACCES: /* a directory of that name is skipped, as if absent */
                if (!denied[0] && !is_directory(candidate))
                    append(denied, 0, sizeof denied, candidate);
                break;
            case ENOENT: case ENOTDIR: case ESTALE: case ELOOP: case ENAMETOOLONG:
                break;
            default:
                fail(126, "exec", err, candidate);
            }
        }
        if (!*end) break;
        entry = end + 1;
    }
    if (denied[0]) fail(126, "exec", EACCES, denied);
    fail(127, "notfound", ENOENT, p->path ? p->path : "");
}

__attribute__((noreturn)) static void become_command(const struct plan *p) {
    if (p->drop) drop_privileges(p);
    if (p->cwd) CHECK(sys1(chdir, p->cwd), "cwd", p->cwd);
    if (p->filter_fd >= 0) install_filter(p->filter_fd);
    /* exec keeps ignored signals ignored: a daemon started under nohup or a shell's `&` would
     * hand its SIG_IGN for INT and QUIT on, and a shell may not even trap them. */
    struct sigaction_k dfl = {0, 0, 0, 0};
    for (int sig = 1; sig <= 64; sig++)
        if (sig != SIGKILL && sig != SIGSTOP) sys4(rt_sigaction, sig, &dfl, 0, 8);
    unsigned long none = 0;
    sys4(rt_sigprocmask, SIG_SETMASK, &none, 0, 8);
    exec_command(p);
}

/* ---- with a PID namespace: the outer process and the init --------------------------- */

static long fork_now(void) { return sys5(clone, SIGCHLD, 0, 0, 0, 0); }

/* PID 1 of the job's namespace: set the job up, start the command as its only direct child
 * (in a session of its own), then forward signals to the command's process group and reap
 * whatever is re-parented here, until the command itself has exited. Its exact wait status
 * goes to the outer process through exact_fd. PID 1 cannot be killed by its own namespace's
 * signals, so it never tries to re-raise one itself. */
__attribute__((noreturn)) static void init(const struct plan *p, int signals, int exact_fd) {
    sys2(prctl, PR_SET_PDEATHSIG, SIGKILL); /* the outer process is gone: so is the job */
    set_up(p);
    long command = fork_now();
    CHECK(command, "fork", "command");
    if (command == 0) {
        sys1(close, signals);
        sys1(close, exact_fd);
        sys0(setsid);
        become_command(p);
    }
    sys1(close, p->status_fd);
    for (;;) {
        int sig = next_signal(signals);
        if (sig != SIGCHLD) {
            if (sys2(kill, -command, sig) < 0) sys2(kill, command, sig);
            continue;
        }
        int status;
        long pid;
        while ((pid = sys4(wait4, -1, &status, WNOHANG | WALL, 0)) > 0) {
            if (pid == command) {
                write_all(exact_fd, (const char *)&status, sizeof status);
                leave(0);
            }
        }
    }
}

/* The daemon's child: passes the daemon's signals to the init and ends as the command did. */
__attribute__((noreturn)) static void outer(const struct plan *p) {
    unsigned long set = forwarded() | (1UL << (SIGCHLD - 1));
    CHECK(sys4(rt_sigprocmask, SIG_BLOCK, &set, 0, 8), "signals", "block");
    long signals = sys4(signalfd4, -1, &set, 8, SFD_CLOEXEC);
    CHECK(signals, "signals", "signalfd");
    int exact[2];
    CHECK(sys2(pipe2, exact, O_CLOEXEC), "fork", "pipe");
    long child = fork_now();
    CHECK(child, "fork", "init");
    if (child == 0) {
        sys1(close, exact[0]);
        init(p, (int)signals, exact[1]);
    }
    sys1(close, exact[1]);
    sys1(close, p->status_fd);
    int status = 0;
    for (;;) {
        int sig = next_signal((int)signals);
        if (sig != SIGCHLD) {
            sys2(kill, child, sig);
            continue;
        }
        if (sys4(wait4, child, &status, WNOHANG | WALL, 0) == child) break;
    }
    int command_status;
    if (sys3(read, exact[0], &command_status, sizeof command_status) == sizeof command_status)
        status = command_status;
    end_like(status);
}

/* ---- the whole ---------------------------------------------------------------------- */

__attribute__((noreturn)) static void launch(int argc, char **argv, char **envp) {
    static struct plan plan;
    struct plan *p = &plan;
    p->status_fd = -1;
    p->filter_fd = -1;
    p->uid = p->gid = -1;
    p->envp = envp;
    parse(p, argc, argv);
    status_fd = p->status_fd;
    if (status_fd >= 0) CHECK(sys3(fcntl, status_fd, F_SETFD, FD_CLOEXEC), "usage", "-s");
    if (p->filter_fd >= 0) CHECK(sys3(fcntl, p->filter_fd, F_SETFD, FD_CLOEXEC), "usage", "-f");

    char pid[24];
    unsigned long pid_length = decimal(pid, (unsigned long)sys0(getpid));
    pid[pid_length++] = '\n';
    for (int i = 0; i < p->nprocs; i++) {
        long fd = sys4(openat, AT_FDCWD, p->procs[i], O_WRONLY | O_CLOEXEC, 0);
        if (fd < 0) fail(125, "cgroup", fd, p->procs[i]);
        long written = sys3(write, fd, pid, pid_length);
        if (written != (long)pid_length) fail(125, "cgroup", written < 0 ? written : -EIO,
                                              p->procs[i]);
        sys1(close, fd);
    }
    if (p->oom_adj) {
        long fd = sys4(openat, AT_FDCWD, "/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC, 0);
        CHECK(fd, "oom", p->oom_adj);
        long written = sys3(write, fd, p->oom_adj, length(p->oom_adj));
        CHECK(written, "oom", p->oom_adj);
        sys1(close, fd);
    }
    if (p->ns) CHECK(sys1(unshare, p->ns), "unshare", "");
    if (p->ns & CLONE_NEWPID) outer(p);
    set_up(p);
    become_command(p);
}

#ifdef JOBD_LIBC
int main(int argc, char **argv, char **envp) { launch(argc, argv, envp); }
#else
__attribute__((used, noreturn)) void launch_start(long *stack) {
    int argc = (int)stack[0];
    char **argv = (char **)(stack + 1);
    launch(argc, argv, argv + argc + 1);
}

/* The kernel starts a static program here with argc, argv and envp on the stack. */
__asm__(".globl _start\n"
        "_start:\n"
        "  mov %rsp, %rdi\n"
        "  and $-16, %rsp\n"
        "  call launch_start\n"
        "  hlt\n");
#endif
