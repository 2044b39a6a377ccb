"""The built-in demo model: a small SD 1.x-shaped pipeline that runs anywhere without a download."""
