-- Sample data for the devstack database (run by devstack/up with psql -v orders_rows=N).
-- rsdataapi.product_detail is the table of the AWS sample this project replaces.

CREATE SCHEMA IF NOT EXISTS rsdataapi;
DROP TABLE IF EXISTS rsdataapi.product_detail;
CREATE TABLE rsdataapi.product_detail (
    sku varchar(20),
    product_id int,
    product_name varchar(50),
    product_description varchar(50)
);
INSERT INTO rsdataapi.product_detail VALUES
    ('FLOWER12', 12345, 'Flowers - Rose', 'Flowers-Rose'),
    ('FLOWER13', 12346, 'Flowers - Jasmine', 'Flowers-Jasmine'),
    ('FLOWER14', 12347, 'Flowers - Other', 'Flowers-Other');
