//! `plategen tune|accuracy COUNT DIR`: writes `DIR/NNNN.jpg` and
//! `DIR/manifest.tsv` (file, plate, difficulty) to look at the photos.

use std::io::Write;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(set), Some(count), Some(dir)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("usage: plategen tune|accuracy COUNT DIR");
        std::process::exit(2);
    };
    let set = match set.as_str() {
        "tune" => plategen::Set::Tune,
        "accuracy" => plategen::Set::Accuracy,
        other => {
            eprintln!("unknown set `{other}`: tune or accuracy");
            std::process::exit(2);
        }
    };
    let count: u32 = count.parse().unwrap_or_else(|_| {
        eprintln!("COUNT must be a number");
        std::process::exit(2);
    });
    std::fs::create_dir_all(dir)?;
    let mut manifest = std::fs::File::create(format!("{dir}/manifest.tsv"))?;
    for i in 0..count {
        let photo = plategen::photo(set, i);
        let file = format!("{i:04}.jpg");
        std::fs::write(format!("{dir}/{file}"), &photo.jpeg)?;
        writeln!(
            manifest,
            "{file}\t{}\t{:.2}",
            photo.plate,
            photo.difficulty()
        )?;
    }
    Ok(())
}
