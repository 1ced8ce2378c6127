//! `spliceway man` prints spliceway(1), and `spliceway man COMMAND` the page of each command its
//! SEE ALSO names, so a package can install every page the main one points to.

use std::process::Command;

const EXE: &str = env!("CARGO_BIN_EXE_spliceway");

fn man(args: &[&str]) -> std::process::Output {
    Command::new(EXE).arg("man").args(args).output().unwrap()
}

#[test]
fn every_page_the_main_page_names_can_be_printed() {
    let main = man(&[]);
    assert!(main.status.success());
    let text = String::from_utf8(main.stdout).unwrap();
    assert!(text.contains(".TH spliceway 1"), "{text}");
    let named: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("spliceway\\-")?.strip_suffix("(1)"))
        .map(str::to_string)
        .collect();
    for command in ["relay", "run", "check", "upgrade", "bench"] {
        assert!(
            named.iter().any(|n| n == command),
            "SEE ALSO names {command}: {named:?}"
        );
    }
    for command in &named {
        let page = man(&[command]);
        assert!(page.status.success(), "spliceway man {command}");
        let page = String::from_utf8(page.stdout).unwrap();
        assert!(
            page.contains(&format!(".TH spliceway-{command} 1")),
            "the page of {command} is titled after it: {}",
            &page[..page.len().min(300)]
        );
    }
    let relay = String::from_utf8(man(&["relay"]).stdout).unwrap();
    assert!(
        relay.contains("accept\\-proxy"),
        "the relay page has its flags"
    );
}

#[test]
fn an_unknown_command_is_a_usage_error() {
    let out = man(&["nope"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no command \"nope\"") && stderr.contains("relay"),
        "{stderr}"
    );
}
