//! Prints the JSON report of the crate or workspace at PATH, through the library alone
//! (no CLI): `cargo run -p ficus-analyzer --example report -- PATH`.

fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| ".".into());
    match ficus_analyzer::analyze(std::path::Path::new(&path), &ficus_analyzer::Options::default()) {
        Ok(r) => print!("{}", ficus_analyzer::render::json(&r)),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
