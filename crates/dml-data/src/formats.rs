//! Readers of the file formats the data sets are stored in, each returning one whole, unsplit
//! data set or array: MNIST's IDX files, the embedded digits, image files and folders, the rendered sets (emoji, glyphs). The data
//! sets at the crate's root ([`crate::digits`], [`crate::idx`], [`crate::cub200`], …) are built
//! on these and return them split; reach here for a whole file, a format's own checks (the fuzz
//! target and the parser tests do), or an image folder's class names.

pub use crate::files::{decode_rgb, read_image_folder};
pub use crate::idx::{
    IDX_FILES, IdxArray, parse_idx, read_idx, read_idx_dir, read_idx_images, read_idx_labels,
};
pub use crate::memory::{DIGITS_LEN, read_digits};
pub use crate::rendered::{
    RENDERED_CLASSES, RENDERED_IMAGES, RENDERED_ITEMS, RenderedClass, RenderedItem, RenderedSet,
    read_rendered,
};
