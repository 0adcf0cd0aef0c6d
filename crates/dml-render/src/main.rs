//! `dml-render`: builds or verifies a rendered data set. `cargo xtask data emoji|glyphs` runs
//! it after fetching and unpacking the packages; run by hand it needs those unpacked folders.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use dml_render::emoji::EMOJI_SPLIT_SEED;
use dml_render::glyphs::{GLYPH_BLOCK, GLYPH_SPLIT_SEED};
use dml_render::{
    EMOJI_PACKAGES, GLYPH_DESIGNS, GLYPH_PACKAGES, Manifest, build_emoji, build_glyphs, store,
    verify,
};

#[derive(Parser)]
#[command(
    name = "dml-render",
    about = "Build or verify dml's rendered data sets"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Emoji,
    Glyphs,
}

#[derive(Subcommand)]
enum Command {
    /// Print the pinned packages a set is built from, one `REGISTRY NAME VERSION` per line.
    Sources {
        #[arg(value_enum)]
        kind: Kind,
    },
    /// Build the emoji set from the npm packages unpacked under SOURCES (SOURCES/<name>/package/).
    Emoji {
        /// The folder holding the unpacked packages.
        #[arg(long)]
        sources: PathBuf,
        /// The folder to write the set into (created).
        #[arg(long)]
        out: PathBuf,
    },
    /// Build the glyph set from the Debian font packages unpacked (dpkg-deb -x) into FONTS.
    Glyphs {
        /// The folder the packages are unpacked into (it holds usr/share/fonts/...).
        #[arg(long)]
        fonts: PathBuf,
        /// The folder to write the set into (created).
        #[arg(long)]
        out: PathBuf,
    },
    /// Recompute every checksum of a stored set and compare with its manifest.
    Verify {
        /// The set's folder.
        dir: PathBuf,
    },
}

fn print(manifest: &Manifest) {
    print!("{}", manifest.to_text());
}

fn run() -> Result<()> {
    match Cli::parse().command {
        Command::Sources { kind } => {
            let packages: &[dml_render::Package] = match kind {
                Kind::Emoji => &EMOJI_PACKAGES,
                Kind::Glyphs => &GLYPH_PACKAGES,
            };
            for p in packages {
                println!("{p}");
            }
        }
        Command::Emoji { sources, out } => {
            let t = Instant::now();
            let (set, report) = build_emoji(&sources).context("building the emoji set")?;
            eprintln!("rendered and curated in {:.1} s", t.elapsed().as_secs_f64());
            let text = report.to_text();
            eprint!(
                "{}",
                text.lines()
                    .take(6)
                    .map(|l| format!("{l}\n"))
                    .collect::<String>()
            );
            print(&store(&out, &set, "emoji", EMOJI_SPLIT_SEED, &text)?);
        }
        Command::Glyphs { fonts, out } => {
            let t = Instant::now();
            let (set, report) = build_glyphs(&fonts, &GLYPH_DESIGNS, GLYPH_BLOCK)
                .context("building the glyph set")?;
            eprintln!("rendered and curated in {:.1} s", t.elapsed().as_secs_f64());
            let text = report.to_text();
            eprint!(
                "{}",
                text.lines()
                    .take(6)
                    .map(|l| format!("{l}\n"))
                    .collect::<String>()
            );
            print(&store(&out, &set, "glyphs", GLYPH_SPLIT_SEED, &text)?);
        }
        Command::Verify { dir } => print(&verify(&dir)?),
    }
    Ok(())
}

fn main() {
    if let Err(err) = run() {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
