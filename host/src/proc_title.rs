//! Worker process titles, so that `ps` tells the workers apart: `sockhost: worker 2 gen 3`
//! (slot 2, as in the log lines' `slot=2`, of the third generation: reloads count up).
//!
//! Linux shows a process in two places, and both are set:
//! - the *command line* (`ps -f`, `ps aux`, `top -c`, `/proc/PID/cmdline`): the memory
//!   where the kernel put the arguments at exec, overwritten in place. The title cannot be
//!   longer than the original command line (`sockhost --plugin …` always is long enough
//!   for it); it is cut to fit otherwise.
//! - the *name* (`ps -e`, `top`, `pgrep`, `/proc/PID/comm`): `PR_SET_NAME`, at most 15
//!   bytes: `sockhost w2 g3`. So `pkill sockhost` and `pgrep sockhost` still find workers,
//!   while `killall sockhost` (an exact name) reaches only the arbiter (workers die with
//!   it).
//!
//! The arbiter keeps its own command line: `ps` shows how it was started.
//!
//! Linux only, as process mode is.

// FFI boundary: the process title is written into the process's own argv memory.
#![allow(unsafe_code)]

/// Title this process (a worker, just after fork).
pub fn set(title: &str, name: &str) {
    if let Ok(name) = std::ffi::CString::new(name) {
        let _ = nix::sys::prctl::set_name(&name);
    }
    if let Some((start, end)) = argument_area() {
        let len = end - start;
        let n = title.len().min(len - 1);
        // SAFETY: [start, end) is this process's argument strings, where the kernel laid them
        // out at exec (`arg_start`..`arg_end` of /proc/self/stat): memory of our own initial
        // stack, writable, and outside anything Rust allocated. Nothing holds a reference
        // into it (std copies the arguments out when asked; clap did so at startup) and this
        // freshly forked worker runs one thread. The writes stay inside the range and leave
        // a NUL at its end, so it still reads as C strings.
        unsafe {
            let area = start as *mut u8;
            std::ptr::write_bytes(area, 0, len);
            std::ptr::copy_nonoverlapping(title.as_ptr(), area, n);
        }
    }
}

/// `arg_start` and `arg_end` from /proc/self/stat (fields 48 and 49, Linux 3.5+).
fn argument_area() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_argument_area(&stat)
}

fn parse_argument_area(stat: &str) -> Option<(usize, usize)> {
    // The name (field 2) is in parentheses and may hold spaces and parentheses itself.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split(' ').collect();
    // `rest` starts at field 3.
    let start: usize = fields.get(48 - 3)?.parse().ok()?;
    let end: usize = fields.get(49 - 3)?.parse().ok()?;
    (end > start + 1).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::parse_argument_area;

    #[test]
    fn the_argument_area_is_read_past_a_tricky_name() {
        let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        fields[48 - 3] = "1000".into();
        fields[49 - 3] = "1040".into();
        let stat = format!("42 (a) b (c) {}", fields.join(" "));
        assert_eq!(parse_argument_area(&stat), Some((1000, 1040)));
        assert_eq!(parse_argument_area("42 (short) R 1"), None);
    }

    #[test]
    fn this_process_has_one() {
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        let (start, end) = parse_argument_area(&own).expect("Linux 3.5+");
        assert!(end > start);
    }
}
