"""product_api's own code: the products table. Shared code lives in svckit."""
