//! Stop signals: CRI's `Signal` enum (ContainerConfig.stop_signal, reported
//! in ContainerStatus), the image's `StopSignal` (a name or a number), and
//! the Linux signal numbers they stand for. Real-time signals count from
//! SIGRTMIN = 34 to SIGRTMAX = 64, as the C library and containerd see them.

use gantry_proto::cri::v1::Signal;

/// (CRI enum value, Linux x86_64/aarch64 signal number), in enum order.
const SIGNALS: [(Signal, i32); 65] = [
    (Signal::Sigabrt, 6),
    (Signal::Sigalrm, 14),
    (Signal::Sigbus, 7),
    (Signal::Sigchld, 17),
    (Signal::Sigcld, 17),
    (Signal::Sigcont, 18),
    (Signal::Sigfpe, 8),
    (Signal::Sighup, 1),
    (Signal::Sigill, 4),
    (Signal::Sigint, 2),
    (Signal::Sigio, 29),
    (Signal::Sigiot, 6),
    (Signal::Sigkill, 9),
    (Signal::Sigpipe, 13),
    (Signal::Sigpoll, 29),
    (Signal::Sigprof, 27),
    (Signal::Sigpwr, 30),
    (Signal::Sigquit, 3),
    (Signal::Sigsegv, 11),
    (Signal::Sigstkflt, 16),
    (Signal::Sigstop, 19),
    (Signal::Sigsys, 31),
    (Signal::Sigterm, 15),
    (Signal::Sigtrap, 5),
    (Signal::Sigtstp, 20),
    (Signal::Sigttin, 21),
    (Signal::Sigttou, 22),
    (Signal::Sigurg, 23),
    (Signal::Sigusr1, 10),
    (Signal::Sigusr2, 12),
    (Signal::Sigvtalrm, 26),
    (Signal::Sigwinch, 28),
    (Signal::Sigxcpu, 24),
    (Signal::Sigxfsz, 25),
    (Signal::Sigrtmin, 34),
    (Signal::Sigrtminplus1, 35),
    (Signal::Sigrtminplus2, 36),
    (Signal::Sigrtminplus3, 37),
    (Signal::Sigrtminplus4, 38),
    (Signal::Sigrtminplus5, 39),
    (Signal::Sigrtminplus6, 40),
    (Signal::Sigrtminplus7, 41),
    (Signal::Sigrtminplus8, 42),
    (Signal::Sigrtminplus9, 43),
    (Signal::Sigrtminplus10, 44),
    (Signal::Sigrtminplus11, 45),
    (Signal::Sigrtminplus12, 46),
    (Signal::Sigrtminplus13, 47),
    (Signal::Sigrtminplus14, 48),
    (Signal::Sigrtminplus15, 49),
    (Signal::Sigrtmaxminus14, 50),
    (Signal::Sigrtmaxminus13, 51),
    (Signal::Sigrtmaxminus12, 52),
    (Signal::Sigrtmaxminus11, 53),
    (Signal::Sigrtmaxminus10, 54),
    (Signal::Sigrtmaxminus9, 55),
    (Signal::Sigrtmaxminus8, 56),
    (Signal::Sigrtmaxminus7, 57),
    (Signal::Sigrtmaxminus6, 58),
    (Signal::Sigrtmaxminus5, 59),
    (Signal::Sigrtmaxminus4, 60),
    (Signal::Sigrtmaxminus3, 61),
    (Signal::Sigrtmaxminus2, 62),
    (Signal::Sigrtmaxminus1, 63),
    (Signal::Sigrtmax, 64),
];

/// The signal number of a CRI `Signal` value; `Ok(None)` for
/// SIGNAL_RUNTIME_DEFAULT, an error naming the value when it is none of the
/// enum's.
pub fn from_cri(value: i32) -> Result<Option<i32>, String> {
    match Signal::try_from(value) {
        Ok(Signal::RuntimeDefault) => Ok(None),
        Ok(signal) => Ok(SIGNALS.iter().find(|(s, _)| *s == signal).map(|(_, n)| *n)),
        Err(_) => Err(format!("stop_signal {value} is not a CRI Signal (0 to 65)")),
    }
}

/// The CRI `Signal` for a signal number (the first name of a number with
/// two, SIGABRT before SIGIOT), SIGNAL_RUNTIME_DEFAULT when there is none.
pub fn to_cri(number: Option<i32>) -> Signal {
    number.and_then(|n| SIGNALS.iter().find(|(_, m)| *m == n).map(|(s, _)| *s)).unwrap_or(Signal::RuntimeDefault)
}

/// An image's `StopSignal`: `SIGTERM`, `TERM`, `15`, or `SIGRTMIN+3`.
pub fn parse(s: &str) -> Option<i32> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = s.strip_prefix("SIG").unwrap_or(s);
    if let Some(rest) = name.strip_prefix("RTMIN") {
        let offset: i32 = if rest.is_empty() { 0 } else { rest.strip_prefix('+')?.parse().ok()? };
        return (0..=30).contains(&offset).then_some(34 + offset);
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        let offset: i32 = if rest.is_empty() { 0 } else { rest.strip_prefix('-')?.parse().ok()? };
        return (0..=30).contains(&offset).then_some(64 - offset);
    }
    format!("SIG{name}").parse::<nix::sys::signal::Signal>().ok().map(|s| s as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cri_signal_has_its_number_and_back() {
        assert_eq!(from_cri(Signal::RuntimeDefault as i32), Ok(None));
        assert_eq!(from_cri(Signal::Sigterm as i32), Ok(Some(15)));
        assert_eq!(from_cri(Signal::Sigrtmin as i32), Ok(Some(34)));
        assert_eq!(from_cri(Signal::Sigrtmax as i32), Ok(Some(64)));
        assert!(from_cri(66).unwrap_err().contains("66"));
        assert!(from_cri(-1).is_err());
        for value in 1..=65 {
            let n = from_cri(value).expect("known").expect("a number");
            let back = to_cri(Some(n));
            assert_eq!(from_cri(back as i32), Ok(Some(n)), "value {value}");
        }
        assert_eq!(to_cri(Some(6)), Signal::Sigabrt);
        assert_eq!(to_cri(None), Signal::RuntimeDefault);
    }

    #[test]
    fn image_stop_signals_parse_like_dockers() {
        assert_eq!(parse("SIGTERM"), Some(15));
        assert_eq!(parse("QUIT"), Some(3));
        assert_eq!(parse("9"), Some(9));
        assert_eq!(parse("SIGRTMIN+3"), Some(37));
        assert_eq!(parse("RTMAX-1"), Some(63));
        assert_eq!(parse(""), None);
        assert_eq!(parse("SIGNOPE"), None);
        assert_eq!(parse("0"), None);
        assert_eq!(parse("99"), None);
    }
}
