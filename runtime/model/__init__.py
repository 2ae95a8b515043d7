"""Where the model comes from: flags, an export's manifest, the user cache, or the public checkpoint fetched."""
