//! The dataset readers: Fashion-MNIST's IDX files (real and damaged) and ImageFolder trees.

use std::io::Write;
use std::path::Path;

use ard_engine::data::{Split, fashion_mnist_from, fashion_mnist_split, image_folder, read_idx};

fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        b.extend(d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn fashion_mnist_test_split_reads() {
    let test = fashion_mnist_split(Split::Test)
        .expect("Fashion-MNIST is installed by .ci/run (apt-get install dataset-fashion-mnist)");
    assert_eq!(test.images.shape, vec![10000, 1, 28, 28]);
    assert_eq!(test.class_names[9], "Ankle boot");
    assert!(test.images.data.iter().all(|v| (-1.0..=1.0).contains(v)));
    let counts = (0..10).map(|c| test.labels.iter().filter(|&&l| l == c).count());
    assert!(
        counts.into_iter().all(|n| n == 1000),
        "1000 test images per class"
    );
}

#[test]
fn damaged_idx_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let ok = idx_bytes(&[2, 2, 2], &[0, 64, 128, 255, 1, 2, 3, 4]);
    assert_eq!(
        read_idx(&write("ok.gz", &gz(&ok))).unwrap().0,
        vec![2, 2, 2]
    );

    let msg = read_idx(&write("magic", b"\x01\x02\x08\x01xxxx"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("bad magic"), "{msg}");
    let msg = read_idx(&write("cut", &ok[..ok.len() - 3]))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("truncated"), "{msg}");
    let msg = read_idx(&write("cut.gz", &gz(&ok)[..20]))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("gzip") || msg.contains("truncated"), "{msg}");
    let msg = read_idx(&write("float", &[0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0]))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("not unsigned bytes"), "{msg}");

    // A split whose labels disagree with its images.
    write("train-images-idx3-ubyte", &ok);
    write("train-labels-idx1-ubyte", &idx_bytes(&[3], &[0, 1, 2]));
    let msg = fashion_mnist_from(dir.path(), Split::Train)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("labels for 2 images"), "{msg}");
    write("train-labels-idx1-ubyte", &idx_bytes(&[2], &[0, 11]));
    let msg = fashion_mnist_from(dir.path(), Split::Train)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("label 11 out of range"), "{msg}");
    write("train-labels-idx1-ubyte", &idx_bytes(&[2], &[0, 9]));
    let d = fashion_mnist_from(dir.path(), Split::Train).unwrap();
    assert_eq!(d.labels, vec![0, 9]);
    assert_eq!(d.images.data[0], -1.0);
    assert_eq!(d.images.data[3], 1.0);

    let msg = fashion_mnist_from(Path::new("/nonexistent"), Split::Test)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("dataset-fashion-mnist"), "{msg}");
}

#[test]
fn image_folder_reads_classes_and_rejects_bad_trees() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for (class, colour) in [("cats", [200u8, 20, 20]), ("dogs", [20, 20, 200])] {
        std::fs::create_dir(root.join(class)).unwrap();
        for i in 0..3 {
            let img = image::RgbImage::from_pixel(12 + i, 10, image::Rgb(colour));
            img.save(root.join(class).join(format!("{i}.png"))).unwrap();
        }
    }
    std::fs::write(root.join("dogs/readme.txt"), "not an image").unwrap();
    let rgb = image_folder(root, 8, 3).unwrap();
    assert_eq!(rgb.images.shape, vec![6, 3, 8, 8]);
    assert_eq!(rgb.class_names, vec!["cats", "dogs"]);
    assert_eq!(rgb.labels, vec![0, 0, 0, 1, 1, 1]);
    assert!(rgb.images.data[0] > 0.5, "cats are red");
    let grey = image_folder(root, 4, 1).unwrap();
    assert_eq!(grey.images.shape, vec![6, 1, 4, 4]);

    std::fs::write(root.join("dogs/broken.png"), b"\x89PNG garbage").unwrap();
    let msg = image_folder(root, 8, 3).unwrap_err().to_string();
    assert!(msg.contains("broken.png"), "{msg}");
    std::fs::remove_file(root.join("dogs/broken.png")).unwrap();

    // A PNG named `.JPEG` (ImageNet's training set has some): the format comes from the bytes.
    std::fs::rename(root.join("cats/2.png"), root.join("cats/2.JPEG")).unwrap();
    let renamed = image_folder(root, 8, 3).unwrap();
    assert_eq!(renamed.labels, vec![0, 0, 0, 1, 1, 1]);
    assert_eq!(renamed.images.data, rgb.images.data);

    std::fs::create_dir(root.join("empty")).unwrap();
    let msg = image_folder(root, 8, 3).unwrap_err().to_string();
    assert!(
        msg.contains("empty") && msg.contains("no PNG or JPEG"),
        "{msg}"
    );

    let flat = tempfile::tempdir().unwrap();
    let msg = image_folder(flat.path(), 8, 3).unwrap_err().to_string();
    assert!(msg.contains("no class folders"), "{msg}");
    assert!(image_folder(root, 8, 2).is_err());
}
