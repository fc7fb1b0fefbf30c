/*
 * jobd-shim: a job's first process. It writes its own pid into every cgroup.procs file given
 * before "--", then execs the program named after "--" with the argv that follows it:
 *
 *     jobd-shim PROCS_FILE... -- EXECUTABLE ARGV0 ARG...
 *
 * so the command's first instruction already runs inside the job's cgroups. It does what the
 * /bin/sh shim (jobd/cgroups/shim.py) does, ~0.4 ms cheaper a job: it is built freestanding,
 * with no libc, so there is no dynamic loader to map and relocate and no libc start-up; in a
 * VM, glibc's start-up alone traps to the hypervisor on every CPUID it runs.
 *
 * Exit codes before the exec, as a shell would use them: 125 a group could not be joined (or
 * the arguments are wrong: it writes only to files named cgroup.procs), 126 the program could
 * not be executed, 127 it does not exist.
 * The reason goes to stderr, which is the job's own output.
 */

#if !defined(__x86_64__) || !defined(__linux__)
#error "jobd-shim is written for x86_64 Linux; elsewhere jobd uses its /bin/sh shim"
#endif

#define SYS_write 1
#define SYS_close 3
#define SYS_getpid 39
#define SYS_execve 59
#define SYS_exit_group 231
#define SYS_openat 257
#define AT_FDCWD (-100)
#define O_WRONLY 01
#define O_CLOEXEC 02000000
#define ENOENT 2
#define EIO 5

static long syscall3(long number, long a, long b, long c) {
    long result;
    __asm__ volatile("syscall"
                     : "=a"(result)
                     : "a"(number), "D"(a), "S"(b), "d"(c)
                     : "rcx", "r11", "memory");
    return result;
}

__attribute__((noreturn)) static void leave(int code) {
    syscall3(SYS_exit_group, code, 0, 0);
    __builtin_unreachable();
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

/* Whether path names a cgroup.procs file: anything else is refused, so that a wrong command
 * line can never make this root-run program write a pid into some other file. */
static int procs_file(const char *path) {
    static const char name[] = "/cgroup.procs";
    unsigned long n = length(path), k = sizeof name - 1;
    return n >= k && same(path + n - k, name);
}

/* Decimal digits of value, followed by end, into buf; returns the length. */
static int decimal(char *buf, unsigned long value, char end) {
    char digits[24];
    int n = 0, i = 0;
    do digits[n++] = (char)('0' + value % 10), value /= 10; while (value);
    while (n) buf[i++] = digits[--n];
    buf[i++] = end;
    return i;
}

static const char *reason(long err) {
    switch (err) {
    case 1: return "Operation not permitted";
    case 2: return "No such file or directory";
    case 3: return "No such process";
    case 8: return "Exec format error";
    case 11: return "Resource temporarily unavailable";
    case 12: return "Cannot allocate memory";
    case 13: return "Permission denied";
    case 16: return "Device or resource busy";
    case 20: return "Not a directory";
    case 22: return "Invalid argument";
    case 28: return "No space left on device";
    }
    return 0;
}

static void say(const char *text) { syscall3(SYS_write, 2, (long)text, (long)length(text)); }

/* "jobd-shim: WHAT PATH: REASON" on stderr, then exit; err is a positive errno. */
__attribute__((noreturn)) static void fail(int code, const char *what, const char *path, long err) {
    char number[24];
    say("jobd-shim: ");
    say(what);
    say(path);
    say(": ");
    if (reason(err)) {
        say(reason(err));
        say("\n");
    } else {
        say("errno ");
        syscall3(SYS_write, 2, (long)number, decimal(number, (unsigned long)err, '\n'));
    }
    leave(code);
}

__attribute__((used, noreturn)) void shim_main(long *stack) {
    long argc = stack[0];
    char **argv = (char **)(stack + 1);
    char **envp = argv + argc + 1;
    char pid[24];
    int pid_length = decimal(pid, (unsigned long)syscall3(SYS_getpid, 0, 0, 0), '\n');
    long i = 1;
    for (; i < argc && !same(argv[i], "--"); i++) {
        if (!procs_file(argv[i])) fail(125, "not a cgroup.procs file: ", argv[i], 22);
        long fd = syscall3(SYS_openat, AT_FDCWD, (long)argv[i], O_WRONLY | O_CLOEXEC);
        if (fd < 0) fail(125, "cannot join ", argv[i], -fd);
        long written = syscall3(SYS_write, fd, (long)pid, pid_length);
        if (written != pid_length)
            fail(125, "cannot join ", argv[i], written < 0 ? -written : EIO);
        syscall3(SYS_close, fd, 0, 0);
    }
    if (i + 2 >= argc) fail(125, "usage: ", "PROCS_FILE... -- EXECUTABLE ARGV0 [ARG...]", 22);
    long err = -syscall3(SYS_execve, (long)argv[i + 1], (long)(argv + i + 2), (long)envp);
    fail(err == ENOENT ? 127 : 126, "cannot execute ", argv[i + 1], err);
}

/* The kernel starts a static program here with argc, argv and envp on the stack. */
__asm__(".globl _start\n"
        "_start:\n"
        "  mov %rsp, %rdi\n"
        "  and $-16, %rsp\n"
        "  call shim_main\n"
        "  hlt\n");
