"""What the tests share: servers, projects, URLs, AWS fixtures."""
