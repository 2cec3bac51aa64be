// The PostgreSQL JDBC driver against shoplake's PostgreSQL endpoint (compiled and run by tests/serve/test_pg.py).
// Prints tab-separated lines: TABLE <schema> <name>, COLUMN <name> <type>, ROW <values...>.
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.util.Properties;

public class ShoplakeJdbc {
    public static void main(String[] args) throws Exception {
        String url = args[0];  // jdbc:postgresql://127.0.0.1:PORT/shoplake
        Properties props = new Properties();
        props.setProperty("user", args[1]);
        props.setProperty("password", args[2]);
        try (Connection conn = DriverManager.getConnection(url, props)) {
            DatabaseMetaData meta = conn.getMetaData();
            try (ResultSet tables = meta.getTables(null, "gold", "%", new String[] {"TABLE"})) {
                while (tables.next()) {
                    System.out.println("TABLE\t" + tables.getString("TABLE_SCHEM") + "\t" + tables.getString("TABLE_NAME"));
                }
            }
            try (ResultSet columns = meta.getColumns(null, "gold", "daily_funnel", "%")) {
                while (columns.next()) {
                    System.out.println("COLUMN\t" + columns.getString("COLUMN_NAME") + "\t" + columns.getString("TYPE_NAME"));
                }
            }
            String sql = args[3];
            try (PreparedStatement statement = conn.prepareStatement(sql)) {
                statement.setString(1, args[4]);
                try (ResultSet rows = statement.executeQuery()) {
                    int n = rows.getMetaData().getColumnCount();
                    while (rows.next()) {
                        StringBuilder line = new StringBuilder("ROW");
                        for (int i = 1; i <= n; i++) {
                            line.append('\t').append(rows.getString(i));
                        }
                        System.out.println(line);
                    }
                }
            }
        }
    }
}
