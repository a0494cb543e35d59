//! Reading a tables file (TOML, `docs/tables.md`) into compiled [`Tables`].

use pipeline::tables::{Tables, TablesError, TablesSpec};
use std::path::{Path, PathBuf};

/// Why a tables file could not be loaded. Each variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum TablesFileError {
    #[error("cannot read tables file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tables file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("tables file {path}: {source}")]
    Compile { path: PathBuf, source: TablesError },
}

/// Parses tables text; `origin` names it in errors.
pub fn parse_spec(text: &str, origin: &Path) -> Result<TablesSpec, TablesFileError> {
    toml::from_str(text).map_err(|e| TablesFileError::Parse {
        path: origin.to_path_buf(),
        message: e.to_string(),
    })
}

/// Reads, parses and compiles a tables file.
pub fn load(path: &Path, generation: u64) -> Result<Tables, TablesFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| TablesFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let spec = parse_spec(&text, path)?;
    Tables::compile(&spec, generation).map_err(|source| TablesFileError::Compile {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../docs/examples/k8s-w1.tables.toml");

    #[test]
    fn the_example_loads() {
        let spec = parse_spec(EXAMPLE, Path::new("example")).unwrap();
        let t = Tables::compile(&spec, 3).unwrap();
        assert_eq!(t.node_name, "k8s-w1");
        assert_eq!(t.generation, 3);
    }

    fn err_of(text: &str) -> String {
        match parse_spec(text, Path::new("t.toml")).and_then(|s| {
            Tables::compile(&s, 1).map_err(|source| TablesFileError::Compile {
                path: "t.toml".into(),
                source,
            })
        }) {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn bad_files_get_errors_that_say_what_and_where() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "typo in a key",
                "address = \"192.168.10.101\"",
                "adress = \"192.168.10.101\"",
            ),
            (
                "bad address",
                "address = \"192.168.10.101\"",
                "address = \"192.168.10.301\"",
            ),
            (
                "host bits",
                "prefix = \"172.16.184.0/26\"",
                "prefix = \"172.16.184.5/26\"",
            ),
            ("unknown peer", "peer = \"k8s-w2\"", "peer = \"k8s-w9\""),
            (
                "bad mac",
                "mac = \"02:00:ac:10:9e:01\"",
                "mac = \"02:00:ac:10:9e\"",
            ),
            ("unknown port", "port = \"caliw1p1\"", "port = \"nope\""),
            ("tiny mtu", "mtu = 1500", "mtu = 100"),
            (
                "bad mode",
                "ipip_mode = \"Always\"",
                "ipip_mode = \"Sometimes\"",
            ),
        ];
        for (what, from, to) in cases {
            assert!(EXAMPLE.contains(from), "{what}: fixture text changed");
            let msg = err_of(&EXAMPLE.replacen(from, to, 1));
            assert!(msg.contains("t.toml"), "{what}: {msg}");
            let key = to.split(" = ").nth(1).unwrap().trim_matches('"');
            let names_it = msg.contains(key) || msg.contains(to.split(" = ").next().unwrap());
            assert!(
                names_it,
                "{what}: error should name the bad value or key: {msg}"
            );
        }
    }

    #[test]
    fn duplicates_and_missing_pieces_are_errors() {
        let dup = EXAMPLE.replacen(
            "address = \"172.16.158.2\"",
            "address = \"172.16.158.1\"",
            1,
        );
        assert!(err_of(&dup).contains("172.16.158.1"));
        let vx = EXAMPLE
            .replace("vtep_mac = \"66:00:c0:a8:0a:66\"\n", "")
            .replace("ipip_mode = \"Always\"", "vxlan_mode = \"Always\"")
            .replacen("vxlan_mode = \"Never\"", "ipip_mode = \"Never\"", 1);
        assert!(err_of(&vx).contains("vtep_mac"), "{}", err_of(&vx));
        let no_uplink = EXAMPLE.replacen("uplink = \"eth0\"", "uplink = \"caliw1p1\"", 1);
        assert!(err_of(&no_uplink).contains("uplink"));
    }
}
