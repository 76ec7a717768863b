//! Linux system call numbers for the ABIs the seccomp filter covers: x86_64,
//! x32 (to be or-ed with `__X32_SYSCALL_BIT`), i386 and aarch64, and the
//! names of every other architecture's calls with no number here (so that
//! gantryd can tell a misspelt name from another architecture's call).
//!
//! Data, not code: taken from the kernel's tables as of Linux 7.1-rc4
//! (arch/x86/entry/syscalls/syscall_64.tbl and syscall_32.tbl,
//! scripts/syscall.tbl for arm64), checked against libseccomp's
//! syscalls.csv of the same version, which also names the calls of the
//! other architectures. Shared by the shim (compiling profiles) and gantryd
//! (validating them) through `#[path]`.
//!
//! No pointers in the data: a table of `&str` would be relocated, and so
//! dirtied, in every shim at start-up; this one stays in read-only pages
//! until a profile is compiled.

/// No such call on that ABI.
pub const NONE: u16 = u16::MAX;

/// Column order of [`NUMBERS`].
pub const X86_64: usize = 0;
pub const X32: usize = 1;
pub const I386: usize = 2;
pub const AARCH64: usize = 3;

/// Every name, one a line, sorted (byte order).
const NAMES: &str = "\
_llseek
_newselect
_sysctl
accept
accept4
access
acct
add_key
adjtimex
afs_syscall
alarm
arch_prctl
arm_fadvise64_64
arm_sync_file_range
atomic_barrier
atomic_cmpxchg_32
bdflush
bind
bpf
break
breakpoint
brk
cachectl
cacheflush
cachestat
capget
capset
chdir
chmod
chown
chown32
chroot
clock_adjtime
clock_adjtime64
clock_getres
clock_getres_time64
clock_gettime
clock_gettime64
clock_nanosleep
clock_nanosleep_time64
clock_settime
clock_settime64
clone
clone3
close
close_range
connect
copy_file_range
creat
create_module
delete_module
dup
dup2
dup3
epoll_create
epoll_create1
epoll_ctl
epoll_ctl_old
epoll_pwait
epoll_pwait2
epoll_wait
epoll_wait_old
eventfd
eventfd2
execve
execveat
exit
exit_group
faccessat
faccessat2
fadvise64
fadvise64_64
fallocate
fanotify_init
fanotify_mark
fchdir
fchmod
fchmodat
fchmodat2
fchown
fchown32
fchownat
fcntl
fcntl64
fdatasync
fgetxattr
file_getattr
file_setattr
finit_module
flistxattr
flock
fork
fremovexattr
fsconfig
fsetxattr
fsmount
fsopen
fspick
fstat
fstat64
fstatat64
fstatfs
fstatfs64
fsync
ftime
ftruncate
ftruncate64
futex
futex_requeue
futex_time64
futex_wait
futex_waitv
futex_wake
futimesat
get_kernel_syms
get_mempolicy
get_robust_list
get_thread_area
get_tls
getcpu
getcwd
getdents
getdents64
getegid
getegid32
geteuid
geteuid32
getgid
getgid32
getgroups
getgroups32
getitimer
getpagesize
getpeername
getpgid
getpgrp
getpid
getpmsg
getppid
getpriority
getrandom
getresgid
getresgid32
getresuid
getresuid32
getrlimit
getrusage
getsid
getsockname
getsockopt
gettid
gettimeofday
getuid
getuid32
getxattr
getxattrat
gtty
idle
init_module
inotify_add_watch
inotify_init
inotify_init1
inotify_rm_watch
io_cancel
io_destroy
io_getevents
io_pgetevents
io_pgetevents_time64
io_setup
io_submit
io_uring_enter
io_uring_register
io_uring_setup
ioctl
ioperm
iopl
ioprio_get
ioprio_set
ipc
kcmp
kexec_file_load
kexec_load
keyctl
kill
landlock_add_rule
landlock_create_ruleset
landlock_restrict_self
lchown
lchown32
lgetxattr
link
linkat
listen
listmount
listns
listxattr
listxattrat
llistxattr
lock
lookup_dcookie
lremovexattr
lseek
lsetxattr
lsm_get_self_attr
lsm_list_modules
lsm_set_self_attr
lstat
lstat64
madvise
map_shadow_stack
mbind
membarrier
memfd_create
memfd_secret
migrate_pages
mincore
mkdir
mkdirat
mknod
mknodat
mlock
mlock2
mlockall
mmap
mmap2
modify_ldt
mount
mount_setattr
move_mount
move_pages
mprotect
mpx
mq_getsetattr
mq_notify
mq_open
mq_timedreceive
mq_timedreceive_time64
mq_timedsend
mq_timedsend_time64
mq_unlink
mremap
mseal
msgctl
msgget
msgrcv
msgsnd
msync
multiplexer
munlock
munlockall
munmap
name_to_handle_at
nanosleep
newfstatat
nfsservctl
nice
oldfstat
oldlstat
oldolduname
oldstat
olduname
open
open_by_handle_at
open_tree
open_tree_attr
openat
openat2
pause
pciconfig_iobase
pciconfig_read
pciconfig_write
perf_event_open
personality
pidfd_getfd
pidfd_open
pidfd_send_signal
pipe
pipe2
pivot_root
pkey_alloc
pkey_free
pkey_mprotect
poll
ppoll
ppoll_time64
prctl
pread64
preadv
preadv2
prlimit64
process_madvise
process_mrelease
process_vm_readv
process_vm_writev
prof
profil
pselect6
pselect6_time64
ptrace
putpmsg
pwrite64
pwritev
pwritev2
query_module
quotactl
quotactl_fd
read
readahead
readdir
readlink
readlinkat
readv
reboot
recv
recvfrom
recvmmsg
recvmmsg_time64
recvmsg
remap_file_pages
removexattr
removexattrat
rename
renameat
renameat2
request_key
restart_syscall
riscv_flush_icache
riscv_hwprobe
rmdir
rseq
rseq_slice_yield
rt_sigaction
rt_sigpending
rt_sigprocmask
rt_sigqueueinfo
rt_sigreturn
rt_sigsuspend
rt_sigtimedwait
rt_sigtimedwait_time64
rt_tgsigqueueinfo
rtas
s390_guarded_storage
s390_pci_mmio_read
s390_pci_mmio_write
s390_runtime_instr
s390_sthyi
sched_get_priority_max
sched_get_priority_min
sched_getaffinity
sched_getattr
sched_getparam
sched_getscheduler
sched_rr_get_interval
sched_rr_get_interval_time64
sched_setaffinity
sched_setattr
sched_setparam
sched_setscheduler
sched_yield
seccomp
security
select
semctl
semget
semop
semtimedop
semtimedop_time64
send
sendfile
sendfile64
sendmmsg
sendmsg
sendto
set_mempolicy
set_mempolicy_home_node
set_robust_list
set_thread_area
set_tid_address
set_tls
setdomainname
setfsgid
setfsgid32
setfsuid
setfsuid32
setgid
setgid32
setgroups
setgroups32
sethostname
setitimer
setns
setpgid
setpriority
setregid
setregid32
setresgid
setresgid32
setresuid
setresuid32
setreuid
setreuid32
setrlimit
setsid
setsockopt
settimeofday
setuid
setuid32
setxattr
setxattrat
sgetmask
shmat
shmctl
shmdt
shmget
shutdown
sigaction
sigaltstack
signal
signalfd
signalfd4
sigpending
sigprocmask
sigreturn
sigsuspend
socket
socketcall
socketpair
splice
spu_create
spu_run
ssetmask
stat
stat64
statfs
statfs64
statmount
statx
stime
stty
subpage_prot
swapcontext
swapoff
swapon
switch_endian
symlink
symlinkat
sync
sync_file_range
sync_file_range2
syncfs
sys_debug_setcontext
syscall
sysfs
sysinfo
syslog
sysmips
tee
tgkill
time
timer_create
timer_delete
timer_getoverrun
timer_gettime
timer_gettime64
timer_settime
timer_settime64
timerfd
timerfd_create
timerfd_gettime
timerfd_gettime64
timerfd_settime
timerfd_settime64
times
tkill
truncate
truncate64
tuxcall
ugetrlimit
ulimit
umask
umount
umount2
uname
unlink
unlinkat
unshare
uprobe
uretprobe
uselib
userfaultfd
usr26
usr32
ustat
utime
utimensat
utimensat_time64
utimes
vfork
vhangup
vm86
vm86old
vmsplice
vserver
wait4
waitid
waitpid
write
writev";

/// [x86_64, x32 without the x32 bit, i386, aarch64], in the order of [`NAMES`].
const NUMBERS: [[u16; 4]; 508] = [
    [NONE, NONE, 140, NONE],  // _llseek
    [NONE, NONE, 142, NONE],  // _newselect
    [156, NONE, 149, NONE],   // _sysctl
    [43, 43, NONE, 202],      // accept
    [288, 288, 364, 242],     // accept4
    [21, 21, 33, NONE],       // access
    [163, 163, 51, 89],       // acct
    [248, 248, 286, 217],     // add_key
    [159, 159, 124, 171],     // adjtimex
    [183, 183, 137, NONE],    // afs_syscall
    [37, 37, 27, NONE],       // alarm
    [158, 158, 384, NONE],    // arch_prctl
    [NONE, NONE, NONE, NONE], // arm_fadvise64_64
    [NONE, NONE, NONE, NONE], // arm_sync_file_range
    [NONE, NONE, NONE, NONE], // atomic_barrier
    [NONE, NONE, NONE, NONE], // atomic_cmpxchg_32
    [NONE, NONE, 134, NONE],  // bdflush
    [49, 49, 361, 200],       // bind
    [321, 321, 357, 280],     // bpf
    [NONE, NONE, 17, NONE],   // break
    [NONE, NONE, NONE, NONE], // breakpoint
    [12, 12, 45, 214],        // brk
    [NONE, NONE, NONE, NONE], // cachectl
    [NONE, NONE, NONE, NONE], // cacheflush
    [451, 451, 451, 451],     // cachestat
    [125, 125, 184, 90],      // capget
    [126, 126, 185, 91],      // capset
    [80, 80, 12, 49],         // chdir
    [90, 90, 15, NONE],       // chmod
    [92, 92, 182, NONE],      // chown
    [NONE, NONE, 212, NONE],  // chown32
    [161, 161, 61, 51],       // chroot
    [305, 305, 343, 266],     // clock_adjtime
    [NONE, NONE, 405, NONE],  // clock_adjtime64
    [229, 229, 266, 114],     // clock_getres
    [NONE, NONE, 406, NONE],  // clock_getres_time64
    [228, 228, 265, 113],     // clock_gettime
    [NONE, NONE, 403, NONE],  // clock_gettime64
    [230, 230, 267, 115],     // clock_nanosleep
    [NONE, NONE, 407, NONE],  // clock_nanosleep_time64
    [227, 227, 264, 112],     // clock_settime
    [NONE, NONE, 404, NONE],  // clock_settime64
    [56, 56, 120, 220],       // clone
    [435, 435, 435, 435],     // clone3
    [3, 3, 6, 57],            // close
    [436, 436, 436, 436],     // close_range
    [42, 42, 362, 203],       // connect
    [326, 326, 377, 285],     // copy_file_range
    [85, 85, 8, NONE],        // creat
    [174, NONE, 127, NONE],   // create_module
    [176, 176, 129, 106],     // delete_module
    [32, 32, 41, 23],         // dup
    [33, 33, 63, NONE],       // dup2
    [292, 292, 330, 24],      // dup3
    [213, 213, 254, NONE],    // epoll_create
    [291, 291, 329, 20],      // epoll_create1
    [233, 233, 255, 21],      // epoll_ctl
    [214, NONE, NONE, NONE],  // epoll_ctl_old
    [281, 281, 319, 22],      // epoll_pwait
    [441, 441, 441, 441],     // epoll_pwait2
    [232, 232, 256, NONE],    // epoll_wait
    [215, NONE, NONE, NONE],  // epoll_wait_old
    [284, 284, 323, NONE],    // eventfd
    [290, 290, 328, 19],      // eventfd2
    [59, 520, 11, 221],       // execve
    [322, 545, 358, 281],     // execveat
    [60, 60, 1, 93],          // exit
    [231, 231, 252, 94],      // exit_group
    [269, 269, 307, 48],      // faccessat
    [439, 439, 439, 439],     // faccessat2
    [221, 221, 250, 223],     // fadvise64
    [NONE, NONE, 272, NONE],  // fadvise64_64
    [285, 285, 324, 47],      // fallocate
    [300, 300, 338, 262],     // fanotify_init
    [301, 301, 339, 263],     // fanotify_mark
    [81, 81, 133, 50],        // fchdir
    [91, 91, 94, 52],         // fchmod
    [268, 268, 306, 53],      // fchmodat
    [452, 452, 452, 452],     // fchmodat2
    [93, 93, 95, 55],         // fchown
    [NONE, NONE, 207, NONE],  // fchown32
    [260, 260, 298, 54],      // fchownat
    [72, 72, 55, 25],         // fcntl
    [NONE, NONE, 221, NONE],  // fcntl64
    [75, 75, 148, 83],        // fdatasync
    [193, 193, 231, 10],      // fgetxattr
    [468, 468, 468, 468],     // file_getattr
    [469, 469, 469, 469],     // file_setattr
    [313, 313, 350, 273],     // finit_module
    [196, 196, 234, 13],      // flistxattr
    [73, 73, 143, 32],        // flock
    [57, 57, 2, NONE],        // fork
    [199, 199, 237, 16],      // fremovexattr
    [431, 431, 431, 431],     // fsconfig
    [190, 190, 228, 7],       // fsetxattr
    [432, 432, 432, 432],     // fsmount
    [430, 430, 430, 430],     // fsopen
    [433, 433, 433, 433],     // fspick
    [5, 5, 108, 80],          // fstat
    [NONE, NONE, 197, NONE],  // fstat64
    [NONE, NONE, 300, NONE],  // fstatat64
    [138, 138, 100, 44],      // fstatfs
    [NONE, NONE, 269, NONE],  // fstatfs64
    [74, 74, 118, 82],        // fsync
    [NONE, NONE, 35, NONE],   // ftime
    [77, 77, 93, 46],         // ftruncate
    [NONE, NONE, 194, NONE],  // ftruncate64
    [202, 202, 240, 98],      // futex
    [456, 456, 456, 456],     // futex_requeue
    [NONE, NONE, 422, NONE],  // futex_time64
    [455, 455, 455, 455],     // futex_wait
    [449, 449, 449, 449],     // futex_waitv
    [454, 454, 454, 454],     // futex_wake
    [261, 261, 299, NONE],    // futimesat
    [177, NONE, 130, NONE],   // get_kernel_syms
    [239, 239, 275, 236],     // get_mempolicy
    [274, 531, 312, 100],     // get_robust_list
    [211, NONE, 244, NONE],   // get_thread_area
    [NONE, NONE, NONE, NONE], // get_tls
    [309, 309, 318, 168],     // getcpu
    [79, 79, 183, 17],        // getcwd
    [78, 78, 141, NONE],      // getdents
    [217, 217, 220, 61],      // getdents64
    [108, 108, 50, 177],      // getegid
    [NONE, NONE, 202, NONE],  // getegid32
    [107, 107, 49, 175],      // geteuid
    [NONE, NONE, 201, NONE],  // geteuid32
    [104, 104, 47, 176],      // getgid
    [NONE, NONE, 200, NONE],  // getgid32
    [115, 115, 80, 158],      // getgroups
    [NONE, NONE, 205, NONE],  // getgroups32
    [36, 36, 105, 102],       // getitimer
    [NONE, NONE, NONE, NONE], // getpagesize
    [52, 52, 368, 205],       // getpeername
    [121, 121, 132, 155],     // getpgid
    [111, 111, 65, NONE],     // getpgrp
    [39, 39, 20, 172],        // getpid
    [181, 181, 188, NONE],    // getpmsg
    [110, 110, 64, 173],      // getppid
    [140, 140, 96, 141],      // getpriority
    [318, 318, 355, 278],     // getrandom
    [120, 120, 171, 150],     // getresgid
    [NONE, NONE, 211, NONE],  // getresgid32
    [118, 118, 165, 148],     // getresuid
    [NONE, NONE, 209, NONE],  // getresuid32
    [97, 97, 76, 163],        // getrlimit
    [98, 98, 77, 165],        // getrusage
    [124, 124, 147, 156],     // getsid
    [51, 51, 367, 204],       // getsockname
    [55, 542, 365, 209],      // getsockopt
    [186, 186, 224, 178],     // gettid
    [96, 96, 78, 169],        // gettimeofday
    [102, 102, 24, 174],      // getuid
    [NONE, NONE, 199, NONE],  // getuid32
    [191, 191, 229, 8],       // getxattr
    [464, 464, 464, 464],     // getxattrat
    [NONE, NONE, 32, NONE],   // gtty
    [NONE, NONE, 112, NONE],  // idle
    [175, 175, 128, 105],     // init_module
    [254, 254, 292, 27],      // inotify_add_watch
    [253, 253, 291, NONE],    // inotify_init
    [294, 294, 332, 26],      // inotify_init1
    [255, 255, 293, 28],      // inotify_rm_watch
    [210, 210, 249, 3],       // io_cancel
    [207, 207, 246, 1],       // io_destroy
    [208, 208, 247, 4],       // io_getevents
    [333, 333, 385, 292],     // io_pgetevents
    [NONE, NONE, 416, NONE],  // io_pgetevents_time64
    [206, 543, 245, 0],       // io_setup
    [209, 544, 248, 2],       // io_submit
    [426, 426, 426, 426],     // io_uring_enter
    [427, 427, 427, 427],     // io_uring_register
    [425, 425, 425, 425],     // io_uring_setup
    [16, 514, 54, 29],        // ioctl
    [173, 173, 101, NONE],    // ioperm
    [172, 172, 110, NONE],    // iopl
    [252, 252, 290, 31],      // ioprio_get
    [251, 251, 289, 30],      // ioprio_set
    [NONE, NONE, 117, NONE],  // ipc
    [312, 312, 349, 272],     // kcmp
    [320, 320, NONE, 294],    // kexec_file_load
    [246, 528, 283, 104],     // kexec_load
    [250, 250, 288, 219],     // keyctl
    [62, 62, 37, 129],        // kill
    [445, 445, 445, 445],     // landlock_add_rule
    [444, 444, 444, 444],     // landlock_create_ruleset
    [446, 446, 446, 446],     // landlock_restrict_self
    [94, 94, 16, NONE],       // lchown
    [NONE, NONE, 198, NONE],  // lchown32
    [192, 192, 230, 9],       // lgetxattr
    [86, 86, 9, NONE],        // link
    [265, 265, 303, 37],      // linkat
    [50, 50, 363, 201],       // listen
    [458, 458, 458, 458],     // listmount
    [470, 470, 470, 470],     // listns
    [194, 194, 232, 11],      // listxattr
    [465, 465, 465, 465],     // listxattrat
    [195, 195, 233, 12],      // llistxattr
    [NONE, NONE, 53, NONE],   // lock
    [212, 212, 253, 18],      // lookup_dcookie
    [198, 198, 236, 15],      // lremovexattr
    [8, 8, 19, 62],           // lseek
    [189, 189, 227, 6],       // lsetxattr
    [459, 459, 459, 459],     // lsm_get_self_attr
    [461, 461, 461, 461],     // lsm_list_modules
    [460, 460, 460, 460],     // lsm_set_self_attr
    [6, 6, 107, NONE],        // lstat
    [NONE, NONE, 196, NONE],  // lstat64
    [28, 28, 219, 233],       // madvise
    [453, 453, 453, 453],     // map_shadow_stack
    [237, 237, 274, 235],     // mbind
    [324, 324, 375, 283],     // membarrier
    [319, 319, 356, 279],     // memfd_create
    [447, 447, 447, 447],     // memfd_secret
    [256, 256, 294, 238],     // migrate_pages
    [27, 27, 218, 232],       // mincore
    [83, 83, 39, NONE],       // mkdir
    [258, 258, 296, 34],      // mkdirat
    [133, 133, 14, NONE],     // mknod
    [259, 259, 297, 33],      // mknodat
    [149, 149, 150, 228],     // mlock
    [325, 325, 376, 284],     // mlock2
    [151, 151, 152, 230],     // mlockall
    [9, 9, 90, 222],          // mmap
    [NONE, NONE, 192, NONE],  // mmap2
    [154, 154, 123, NONE],    // modify_ldt
    [165, 165, 21, 40],       // mount
    [442, 442, 442, 442],     // mount_setattr
    [429, 429, 429, 429],     // move_mount
    [279, 533, 317, 239],     // move_pages
    [10, 10, 125, 226],       // mprotect
    [NONE, NONE, 56, NONE],   // mpx
    [245, 245, 282, 185],     // mq_getsetattr
    [244, 527, 281, 184],     // mq_notify
    [240, 240, 277, 180],     // mq_open
    [243, 243, 280, 183],     // mq_timedreceive
    [NONE, NONE, 419, NONE],  // mq_timedreceive_time64
    [242, 242, 279, 182],     // mq_timedsend
    [NONE, NONE, 418, NONE],  // mq_timedsend_time64
    [241, 241, 278, 181],     // mq_unlink
    [25, 25, 163, 216],       // mremap
    [462, 462, 462, 462],     // mseal
    [71, 71, 402, 187],       // msgctl
    [68, 68, 399, 186],       // msgget
    [70, 70, 401, 188],       // msgrcv
    [69, 69, 400, 189],       // msgsnd
    [26, 26, 144, 227],       // msync
    [NONE, NONE, NONE, NONE], // multiplexer
    [150, 150, 151, 229],     // munlock
    [152, 152, 153, 231],     // munlockall
    [11, 11, 91, 215],        // munmap
    [303, 303, 341, 264],     // name_to_handle_at
    [35, 35, 162, 101],       // nanosleep
    [262, 262, NONE, 79],     // newfstatat
    [180, NONE, 169, 42],     // nfsservctl
    [NONE, NONE, 34, NONE],   // nice
    [NONE, NONE, 28, NONE],   // oldfstat
    [NONE, NONE, 84, NONE],   // oldlstat
    [NONE, NONE, 59, NONE],   // oldolduname
    [NONE, NONE, 18, NONE],   // oldstat
    [NONE, NONE, 109, NONE],  // olduname
    [2, 2, 5, NONE],          // open
    [304, 304, 342, 265],     // open_by_handle_at
    [428, 428, 428, 428],     // open_tree
    [467, 467, 467, 467],     // open_tree_attr
    [257, 257, 295, 56],      // openat
    [437, 437, 437, 437],     // openat2
    [34, 34, 29, NONE],       // pause
    [NONE, NONE, NONE, NONE], // pciconfig_iobase
    [NONE, NONE, NONE, NONE], // pciconfig_read
    [NONE, NONE, NONE, NONE], // pciconfig_write
    [298, 298, 336, 241],     // perf_event_open
    [135, 135, 136, 92],      // personality
    [438, 438, 438, 438],     // pidfd_getfd
    [434, 434, 434, 434],     // pidfd_open
    [424, 424, 424, 424],     // pidfd_send_signal
    [22, 22, 42, NONE],       // pipe
    [293, 293, 331, 59],      // pipe2
    [155, 155, 217, 41],      // pivot_root
    [330, 330, 381, 289],     // pkey_alloc
    [331, 331, 382, 290],     // pkey_free
    [329, 329, 380, 288],     // pkey_mprotect
    [7, 7, 168, NONE],        // poll
    [271, 271, 309, 73],      // ppoll
    [NONE, NONE, 414, NONE],  // ppoll_time64
    [157, 157, 172, 167],     // prctl
    [17, 17, 180, 67],        // pread64
    [295, 534, 333, 69],      // preadv
    [327, 546, 378, 286],     // preadv2
    [302, 302, 340, 261],     // prlimit64
    [440, 440, 440, 440],     // process_madvise
    [448, 448, 448, 448],     // process_mrelease
    [310, 539, 347, 270],     // process_vm_readv
    [311, 540, 348, 271],     // process_vm_writev
    [NONE, NONE, 44, NONE],   // prof
    [NONE, NONE, 98, NONE],   // profil
    [270, 270, 308, 72],      // pselect6
    [NONE, NONE, 413, NONE],  // pselect6_time64
    [101, 521, 26, 117],      // ptrace
    [182, 182, 189, NONE],    // putpmsg
    [18, 18, 181, 68],        // pwrite64
    [296, 535, 334, 70],      // pwritev
    [328, 547, 379, 287],     // pwritev2
    [178, NONE, 167, NONE],   // query_module
    [179, 179, 131, 60],      // quotactl
    [443, 443, 443, 443],     // quotactl_fd
    [0, 0, 3, 63],            // read
    [187, 187, 225, 213],     // readahead
    [NONE, NONE, 89, NONE],   // readdir
    [89, 89, 85, NONE],       // readlink
    [267, 267, 305, 78],      // readlinkat
    [19, 515, 145, 65],       // readv
    [169, 169, 88, 142],      // reboot
    [NONE, NONE, NONE, NONE], // recv
    [45, 517, 371, 207],      // recvfrom
    [299, 537, 337, 243],     // recvmmsg
    [NONE, NONE, 417, NONE],  // recvmmsg_time64
    [47, 519, 372, 212],      // recvmsg
    [216, 216, 257, 234],     // remap_file_pages
    [197, 197, 235, 14],      // removexattr
    [466, 466, 466, 466],     // removexattrat
    [82, 82, 38, NONE],       // rename
    [264, 264, 302, 38],      // renameat
    [316, 316, 353, 276],     // renameat2
    [249, 249, 287, 218],     // request_key
    [219, 219, 0, 128],       // restart_syscall
    [NONE, NONE, NONE, NONE], // riscv_flush_icache
    [NONE, NONE, NONE, NONE], // riscv_hwprobe
    [84, 84, 40, NONE],       // rmdir
    [334, 334, 386, 293],     // rseq
    [471, 471, 471, 471],     // rseq_slice_yield
    [13, 512, 174, 134],      // rt_sigaction
    [127, 522, 176, 136],     // rt_sigpending
    [14, 14, 175, 135],       // rt_sigprocmask
    [129, 524, 178, 138],     // rt_sigqueueinfo
    [15, 513, 173, 139],      // rt_sigreturn
    [130, 130, 179, 133],     // rt_sigsuspend
    [128, 523, 177, 137],     // rt_sigtimedwait
    [NONE, NONE, 421, NONE],  // rt_sigtimedwait_time64
    [297, 536, 335, 240],     // rt_tgsigqueueinfo
    [NONE, NONE, NONE, NONE], // rtas
    [NONE, NONE, NONE, NONE], // s390_guarded_storage
    [NONE, NONE, NONE, NONE], // s390_pci_mmio_read
    [NONE, NONE, NONE, NONE], // s390_pci_mmio_write
    [NONE, NONE, NONE, NONE], // s390_runtime_instr
    [NONE, NONE, NONE, NONE], // s390_sthyi
    [146, 146, 159, 125],     // sched_get_priority_max
    [147, 147, 160, 126],     // sched_get_priority_min
    [204, 204, 242, 123],     // sched_getaffinity
    [315, 315, 352, 275],     // sched_getattr
    [143, 143, 155, 121],     // sched_getparam
    [145, 145, 157, 120],     // sched_getscheduler
    [148, 148, 161, 127],     // sched_rr_get_interval
    [NONE, NONE, 423, NONE],  // sched_rr_get_interval_time64
    [203, 203, 241, 122],     // sched_setaffinity
    [314, 314, 351, 274],     // sched_setattr
    [142, 142, 154, 118],     // sched_setparam
    [144, 144, 156, 119],     // sched_setscheduler
    [24, 24, 158, 124],       // sched_yield
    [317, 317, 354, 277],     // seccomp
    [185, 185, NONE, NONE],   // security
    [23, 23, 82, NONE],       // select
    [66, 66, 394, 191],       // semctl
    [64, 64, 393, 190],       // semget
    [65, 65, NONE, 193],      // semop
    [220, 220, NONE, 192],    // semtimedop
    [NONE, NONE, 420, NONE],  // semtimedop_time64
    [NONE, NONE, NONE, NONE], // send
    [40, 40, 187, 71],        // sendfile
    [NONE, NONE, 239, NONE],  // sendfile64
    [307, 538, 345, 269],     // sendmmsg
    [46, 518, 370, 211],      // sendmsg
    [44, 44, 369, 206],       // sendto
    [238, 238, 276, 237],     // set_mempolicy
    [450, 450, 450, 450],     // set_mempolicy_home_node
    [273, 530, 311, 99],      // set_robust_list
    [205, NONE, 243, NONE],   // set_thread_area
    [218, 218, 258, 96],      // set_tid_address
    [NONE, NONE, NONE, NONE], // set_tls
    [171, 171, 121, 162],     // setdomainname
    [123, 123, 139, 152],     // setfsgid
    [NONE, NONE, 216, NONE],  // setfsgid32
    [122, 122, 138, 151],     // setfsuid
    [NONE, NONE, 215, NONE],  // setfsuid32
    [106, 106, 46, 144],      // setgid
    [NONE, NONE, 214, NONE],  // setgid32
    [116, 116, 81, 159],      // setgroups
    [NONE, NONE, 206, NONE],  // setgroups32
    [170, 170, 74, 161],      // sethostname
    [38, 38, 104, 103],       // setitimer
    [308, 308, 346, 268],     // setns
    [109, 109, 57, 154],      // setpgid
    [141, 141, 97, 140],      // setpriority
    [114, 114, 71, 143],      // setregid
    [NONE, NONE, 204, NONE],  // setregid32
    [119, 119, 170, 149],     // setresgid
    [NONE, NONE, 210, NONE],  // setresgid32
    [117, 117, 164, 147],     // setresuid
    [NONE, NONE, 208, NONE],  // setresuid32
    [113, 113, 70, 145],      // setreuid
    [NONE, NONE, 203, NONE],  // setreuid32
    [160, 160, 75, 164],      // setrlimit
    [112, 112, 66, 157],      // setsid
    [54, 541, 366, 208],      // setsockopt
    [164, 164, 79, 170],      // settimeofday
    [105, 105, 23, 146],      // setuid
    [NONE, NONE, 213, NONE],  // setuid32
    [188, 188, 226, 5],       // setxattr
    [463, 463, 463, 463],     // setxattrat
    [NONE, NONE, 68, NONE],   // sgetmask
    [30, 30, 397, 196],       // shmat
    [31, 31, 396, 195],       // shmctl
    [67, 67, 398, 197],       // shmdt
    [29, 29, 395, 194],       // shmget
    [48, 48, 373, 210],       // shutdown
    [NONE, NONE, 67, NONE],   // sigaction
    [131, 525, 186, 132],     // sigaltstack
    [NONE, NONE, 48, NONE],   // signal
    [282, 282, 321, NONE],    // signalfd
    [289, 289, 327, 74],      // signalfd4
    [NONE, NONE, 73, NONE],   // sigpending
    [NONE, NONE, 126, NONE],  // sigprocmask
    [NONE, NONE, 119, NONE],  // sigreturn
    [NONE, NONE, 72, NONE],   // sigsuspend
    [41, 41, 359, 198],       // socket
    [NONE, NONE, 102, NONE],  // socketcall
    [53, 53, 360, 199],       // socketpair
    [275, 275, 313, 76],      // splice
    [NONE, NONE, NONE, NONE], // spu_create
    [NONE, NONE, NONE, NONE], // spu_run
    [NONE, NONE, 69, NONE],   // ssetmask
    [4, 4, 106, NONE],        // stat
    [NONE, NONE, 195, NONE],  // stat64
    [137, 137, 99, 43],       // statfs
    [NONE, NONE, 268, NONE],  // statfs64
    [457, 457, 457, 457],     // statmount
    [332, 332, 383, 291],     // statx
    [NONE, NONE, 25, NONE],   // stime
    [NONE, NONE, 31, NONE],   // stty
    [NONE, NONE, NONE, NONE], // subpage_prot
    [NONE, NONE, NONE, NONE], // swapcontext
    [168, 168, 115, 225],     // swapoff
    [167, 167, 87, 224],      // swapon
    [NONE, NONE, NONE, NONE], // switch_endian
    [88, 88, 83, NONE],       // symlink
    [266, 266, 304, 36],      // symlinkat
    [162, 162, 36, 81],       // sync
    [277, 277, 314, 84],      // sync_file_range
    [NONE, NONE, NONE, NONE], // sync_file_range2
    [306, 306, 344, 267],     // syncfs
    [NONE, NONE, NONE, NONE], // sys_debug_setcontext
    [NONE, NONE, NONE, NONE], // syscall
    [139, 139, 135, NONE],    // sysfs
    [99, 99, 116, 179],       // sysinfo
    [103, 103, 103, 116],     // syslog
    [NONE, NONE, NONE, NONE], // sysmips
    [276, 276, 315, 77],      // tee
    [234, 234, 270, 131],     // tgkill
    [201, 201, 13, NONE],     // time
    [222, 526, 259, 107],     // timer_create
    [226, 226, 263, 111],     // timer_delete
    [225, 225, 262, 109],     // timer_getoverrun
    [224, 224, 261, 108],     // timer_gettime
    [NONE, NONE, 408, NONE],  // timer_gettime64
    [223, 223, 260, 110],     // timer_settime
    [NONE, NONE, 409, NONE],  // timer_settime64
    [NONE, NONE, NONE, NONE], // timerfd
    [283, 283, 322, 85],      // timerfd_create
    [287, 287, 326, 87],      // timerfd_gettime
    [NONE, NONE, 410, NONE],  // timerfd_gettime64
    [286, 286, 325, 86],      // timerfd_settime
    [NONE, NONE, 411, NONE],  // timerfd_settime64
    [100, 100, 43, 153],      // times
    [200, 200, 238, 130],     // tkill
    [76, 76, 92, 45],         // truncate
    [NONE, NONE, 193, NONE],  // truncate64
    [184, 184, NONE, NONE],   // tuxcall
    [NONE, NONE, 191, NONE],  // ugetrlimit
    [NONE, NONE, 58, NONE],   // ulimit
    [95, 95, 60, 166],        // umask
    [NONE, NONE, 22, NONE],   // umount
    [166, 166, 52, 39],       // umount2
    [63, 63, 122, 160],       // uname
    [87, 87, 10, NONE],       // unlink
    [263, 263, 301, 35],      // unlinkat
    [272, 272, 310, 97],      // unshare
    [336, 336, NONE, NONE],   // uprobe
    [335, 335, NONE, NONE],   // uretprobe
    [134, NONE, 86, NONE],    // uselib
    [323, 323, 374, 282],     // userfaultfd
    [NONE, NONE, NONE, NONE], // usr26
    [NONE, NONE, NONE, NONE], // usr32
    [136, 136, 62, NONE],     // ustat
    [132, 132, 30, NONE],     // utime
    [280, 280, 320, 88],      // utimensat
    [NONE, NONE, 412, NONE],  // utimensat_time64
    [235, 235, 271, NONE],    // utimes
    [58, 58, 190, NONE],      // vfork
    [153, 153, 111, 58],      // vhangup
    [NONE, NONE, 166, NONE],  // vm86
    [NONE, NONE, 113, NONE],  // vm86old
    [278, 532, 316, 75],      // vmsplice
    [236, NONE, 273, NONE],   // vserver
    [61, 61, 114, 260],       // wait4
    [247, 529, 284, 95],      // waitid
    [NONE, NONE, 7, NONE],    // waitpid
    [1, 1, 4, 64],            // write
    [20, 516, 146, 66],       // writev
];

/// The names, indexed for lookups.
pub struct Table(Vec<&'static str>);

impl Table {
    pub fn load() -> Table {
        Table(NAMES.lines().collect())
    }

    /// The number of `name` on the ABI in column `abi`, if it has one.
    pub fn number(&self, name: &str, abi: usize) -> Option<u32> {
        let i = self.0.binary_search(&name).ok()?;
        let nr = NUMBERS[i][abi];
        (nr != NONE).then_some(u32::from(nr))
    }

    /// Whether any Linux architecture has a call of this name.
    pub fn known(&self, name: &str) -> bool {
        self.0.binary_search(&name).is_ok()
    }

    pub fn names(&self) -> &[&'static str] {
        &self.0
    }
}

#[cfg(test)]
mod table_tests {
    use super::*;

    #[test]
    fn one_sorted_name_per_row_of_numbers() {
        let t = Table::load();
        assert_eq!(t.names().len(), NUMBERS.len());
        assert!(t.names().windows(2).all(|w| w[0] < w[1]));
        assert_eq!(t.number("newfstatat", AARCH64), Some(79));
        assert_eq!(t.number("execve", X32), Some(520));
        assert_eq!(t.number("unshare", I386), Some(310));
        assert_eq!(t.number("clock_gettime64", AARCH64), None);
        assert!(t.known("s390_pci_mmio_read") && !t.known("chmood"));
    }
}
