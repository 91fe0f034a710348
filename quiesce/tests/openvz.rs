//! OpenVZ through recording stand-ins: no OpenVZ kernel exists on current
//! distributions, so `vzctl` and `vzlist` are shell scripts that log their
//! arguments. This checks the command lines and their order through the
//! spec and the stack, not any effect on containers.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use quiesce::{Error, Logger, QuiesceStack};

fn stand_in(path: &Path, log: &Path, body: &str) {
    fs::write(
        path,
        format!(
            "#!/bin/sh\necho \"$(basename \"$0\") $*\" >> '{}'\n{body}\n",
            log.display()
        ),
    )
    .unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn checkpoints_and_restores_through_vzctl_and_vzlist() {
    let dir = tempfile::tempdir().unwrap();
    let calls = dir.path().join("calls");
    let vzlist = dir.path().join("vzlist");
    let vzctl = dir.path().join("vzctl");
    stand_in(&vzlist, &calls, "printf '       101\\n       102\\n'");
    stand_in(&vzctl, &calls, "exit 0");
    for (mode, expected) in [
        (
            "checkpoint",
            "vzlist -H -o ctid\nvzctl chkpnt 101\nvzctl chkpnt 102\nvzctl restore 102\nvzctl restore 101\n",
        ),
        (
            "suspend",
            "vzlist -H -o ctid\nvzctl chkpnt 101 --suspend\nvzctl chkpnt 102 --suspend\nvzctl chkpnt 102 --resume\nvzctl chkpnt 101 --resume\n",
        ),
    ] {
        let _ = fs::remove_file(&calls);
        let spec = format!(
            "openvz:mode={mode},vzctl={},vzlist={}",
            vzctl.display(),
            vzlist.display()
        );
        let mut stack = QuiesceStack::from_spec_strings(&[spec], Logger::discard()).unwrap();
        stack.run_frozen(|_| ()).unwrap();
        assert_eq!(fs::read_to_string(&calls).unwrap(), expected);
    }

    // A container that cannot be checkpointed: the others are restored.
    stand_in(
        &vzctl,
        &calls,
        "[ \"$1 $2\" = 'chkpnt 102' ] && { echo 'Checkpointing failed' >&2; exit 16; }; exit 0",
    );
    let _ = fs::remove_file(&calls);
    let spec = format!(
        "openvz:vzctl={},vzlist={}",
        vzctl.display(),
        vzlist.display()
    );
    let mut stack = QuiesceStack::from_spec_strings(&[spec], Logger::discard()).unwrap();
    let error = stack.run_frozen(|_| ()).unwrap_err();
    assert!(matches!(error, Error::Freeze { .. }));
    assert!(
        error
            .to_string()
            .contains("chkpnt 102` exited with status 16: Checkpointing failed"),
        "{error}"
    );
    assert_eq!(
        fs::read_to_string(&calls).unwrap(),
        "vzlist -H -o ctid\nvzctl chkpnt 101\nvzctl chkpnt 102\nvzctl restore 101\n"
    );
}
